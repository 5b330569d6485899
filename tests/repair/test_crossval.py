"""Cross-validation stages: unlearning harder than the strength grid is tried only when
every edit before it falls short, and its candidates go through the same bound."""
from conftest import MLP_TARGET as TARGET

from onnx_bdfix.repair import RepairConfig, repair_model
from onnx_bdfix.repair.plan import fold_order


def alphas(report) -> set[float]:
    return {candidate["alpha"] for candidate in report.candidates}


def test_harder_unlearning_only_when_every_edit_before_it_falls_short(mlp_backdoor, tmp_path):
    model, clean, trigger = mlp_backdoor
    met = RepairConfig(device="cpu", target_class=TARGET, max_clean_drop=1.0, max_asr=1.0)
    report = repair_model(model, clean, trigger, tmp_path / "met.onnx", met)
    assert alphas(report) == set(met.alpha_grid)
    never = RepairConfig(device="cpu", target_class=TARGET, max_clean_drop=1.0, max_asr=0.0,
                         must_meet_asr=False)
    report = repair_model(model, clean, trigger, tmp_path / "short.onnx", never)
    assert alphas(report) == set(never.alpha_grid) | set(never.harder_alphas)
    harder = [c for c in report.candidates if c["alpha"] in never.harder_alphas]
    assert {tuple(c["layers"]) for c in harder} >= {("fc1",), ("fc2",)}
    assert all(c["first"] is None for c in harder)


def test_harder_edits_are_bounded_like_the_rest(mlp_backdoor, tmp_path):
    """With a bound no edit keeps, nothing is written, however hard it unlearns."""
    model, clean, trigger = mlp_backdoor
    config = RepairConfig(device="cpu", target_class=TARGET, max_clean_drop=0.0,
                          max_asr=0.0, must_meet_asr=False)
    report = repair_model(model, clean, trigger, tmp_path / "out.onnx", config)
    assert set(config.harder_alphas) <= alphas(report)
    assert report.chosen == []


def test_fold_order_keeps_each_samples_copies_in_its_fold():
    plain, plain_bounds = fold_order(20, 4, 0)
    order, bounds = fold_order(20, 4, 0, copies=2)
    assert sorted(order.tolist()) == list(range(60))
    for fold in range(4):
        rows = set(order[bounds[fold]:bounds[fold + 1]].tolist())
        given = set(plain[plain_bounds[fold]:plain_bounds[fold + 1]].tolist())
        assert rows == {i + 20 * copy for i in given for copy in range(3)}
