"""The one rule for every file the tool writes (onnx_bdfix.output)."""
import pytest

from onnx_bdfix.errors import OutputPathError
from onnx_bdfix.output import check_distinct, check_output_path, write_atomic


def test_a_failed_check_leaves_nothing_behind(tmp_path):
    def refuse(path):
        raise OutputPathError("no")
    with pytest.raises(OutputPathError):
        write_atomic(tmp_path / "out.bin", b"data", check=refuse)
    assert list(tmp_path.iterdir()) == []


def test_content_can_be_bytes_text_or_a_writer(tmp_path):
    write_atomic(tmp_path / "a", b"x")
    write_atomic(tmp_path / "b", "y")
    write_atomic(tmp_path / "c", lambda handle: handle.write(b"z"))
    assert [(tmp_path / n).read_text() for n in "abc"] == ["x", "y", "z"]


def test_a_link_at_the_output_name_is_replaced(tmp_path):
    target = tmp_path / "elsewhere.txt"
    target.write_text("keep")
    (tmp_path / "out.txt").symlink_to(target)
    check_output_path(tmp_path / "out.txt", [])
    write_atomic(tmp_path / "out.txt", "new")
    assert target.read_text() == "keep"
    assert not (tmp_path / "out.txt").is_symlink()


def test_an_output_must_not_be_an_input_or_what_an_input_links_to(tmp_path):
    real = tmp_path / "model.onnx"
    real.write_bytes(b"m")
    (tmp_path / "link.onnx").symlink_to(real)
    for out in (real, tmp_path / "link.onnx"):
        with pytest.raises(OutputPathError, match="must not overwrite"):
            check_output_path(out, [tmp_path / "link.onnx"])
    with pytest.raises(OutputPathError, match="must not overwrite"):
        check_output_path(real, [tmp_path / "link.onnx"])


def test_names_too_long_and_outputs_that_collide(tmp_path):
    with pytest.raises(OutputPathError, match="longer than"):
        check_output_path(tmp_path / ("n" * 300), [])
    with pytest.raises(OutputPathError, match="must name different files"):
        check_distinct({"--junit": tmp_path / "r", "--html": tmp_path / "r"})
