"""The gate's verdict as file contents: JUnit XML for CI, a one-page HTML report for a
person. (They are written through :mod:`onnx_bdfix.output`, like every file the tool writes.)
"""
from __future__ import annotations

import base64
import html
import io
import xml.etree.ElementTree as ET

from ..errors import MissingDependencyError
from .result import FAILED, SKIPPED, GateResult


# ------------------------------------------------------------------------------ JUnit
def junit_xml(result: GateResult) -> bytes:
    """One <testcase> per check: failed checks carry <failure>, skipped ones <skipped>."""
    counts = {status: sum(c.status == status for c in result.checks) for status in
              (FAILED, SKIPPED)}
    suites = ET.Element("testsuites", name="onnx-bdfix gate", tests=str(len(result.checks)),
                        failures=str(counts[FAILED]), errors="0",
                        time=f"{result.seconds:.3f}")
    suite = ET.SubElement(suites, "testsuite", name=f"onnx-bdfix gate: {result.model.path}",
                          tests=str(len(result.checks)), failures=str(counts[FAILED]),
                          errors="0", skipped=str(counts[SKIPPED]),
                          time=f"{result.seconds:.3f}")
    properties = ET.SubElement(suite, "properties")
    for name, value in (("model_sha256", result.model.sha256), ("data", result.data["path"]),
                        ("verdict", result.summary())):
        ET.SubElement(properties, "property", name=name, value=str(value))
    for check in result.checks:
        case = ET.SubElement(suite, "testcase", classname="onnx-bdfix.gate", name=check.name,
                             time="0")
        if check.status == FAILED:
            failure = ET.SubElement(case, "failure", message=check.message,
                                    type="GateCheckFailed")
            failure.text = check.message
        elif check.status == SKIPPED:
            ET.SubElement(case, "skipped", message=check.message)
        ET.SubElement(case, "system-out").text = check.message
    ET.indent(suites)
    return ET.tostring(suites, encoding="utf-8", xml_declaration=True) + b"\n"


# ------------------------------------------------------------------------------- HTML
def html_report(result: GateResult) -> str:
    """A self-contained page: verdict, checks, and plots as embedded PNG images."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise MissingDependencyError("--html needs matplotlib: pip install "
                                     "'onnx-bdfix[report]'") from exc
    plots = [("Before and after", _quality_bars(plt, result)),
             ("Per-class accuracy", _per_class_bars(plt, result)),
             ("Activations of the layers' inputs", _activation_bars(plt, result))]
    verdict_colour = "#1a7f37" if result.passed else "#cf222e"
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>onnx-bdfix gate: "
             f"{_e(result.model.path)}</title><style>{_STYLE}</style></head><body>",
             f"<h1>onnx-bdfix gate</h1><p class='verdict' style='color:{verdict_colour}'>"
             f"{_e(result.summary())}</p>",
             f"<p>model <code>{_e(result.model.path)}</code> (sha256 "
             f"<code>{result.model.sha256[:16]}</code>)"
             + ("" if result.reference is None else
                f", reference <code>{_e(result.reference.path)}</code>")
             + f"; data <code>{_e(result.data['path'])}</code>, {result.data['samples']} "
             f"samples; {_e(result.provider)}</p>",
             _checks_table(result), _layers_table(result)]
    for title, png in plots:
        if png is not None:
            parts.append(f"<h2>{_e(title)}</h2><img alt='{_e(title)}' "
                         f"src='data:image/png;base64,{base64.b64encode(png).decode()}'>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


_STYLE = ("body{font-family:sans-serif;max-width:60em;margin:2em auto}"
          "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.3em .6em}"
          ".failed{color:#cf222e;font-weight:bold}.passed{color:#1a7f37}.skipped{color:#888}"
          ".verdict{font-size:1.5em;font-weight:bold}img{max-width:100%}")


def _e(text) -> str:
    return html.escape(str(text), quote=True)


def _cell(value) -> str:
    return "" if value is None else f"{value:.4g}"


def _checks_table(result: GateResult) -> str:
    rows = "".join(f"<tr><td>{_e(c.name)}</td><td class='{c.status}'>{c.status}</td>"
                   f"<td>{_cell(c.value)}</td><td>{_cell(c.limit)}</td>"
                   f"<td>{_e(c.message)}</td></tr>" for c in result.checks)
    return ("<h2>Checks</h2><table><tr><th>check</th><th>status</th><th>value</th>"
            f"<th>limit</th><th>detail</th></tr>{rows}</table>")


def _layers_table(result: GateResult) -> str:
    if not result.activations:
        return ""
    edited = set(result.edited_layers)
    mark = lambda row: " (edited)" if edited & set(row["key_of"]) else ""  # noqa: E731
    rows = "".join(
        f"<tr><td>{_e(', '.join(row['key_of']))}{mark(row)}</td>"
        f"<td>{_e(row['name'])}</td><td>{_cell(row['mean_abs'])}</td>"
        f"<td>{row['zero_share']:.1%}</td><td>{_cell(row['divergence'])}</td></tr>"
        for row in result.activations)
    return ("<h2>Layers</h2><p>Inputs (keys) of the editable layers on a probe batch; the "
            "layers whose weights differ from the reference are marked edited.</p><table><tr>"
            "<th>layer</th><th>key tensor</th><th>mean |a|</th><th>zeros</th>"
            f"<th>triggered vs clean</th></tr>{rows}</table>")


def _png(plt, figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight",
                   metadata={"Software": None})
    plt.close(figure)
    return buffer.getvalue()


def _quality_bars(plt, result: GateResult) -> bytes:
    models = ([("reference", result.reference)] if result.reference else []) + \
        [("model", result.model)]
    metrics = [("clean accuracy", "clean_accuracy"), ("attack success", "attack_success_rate"),
               ("target-class accuracy", "target_class_accuracy")]
    figure, axis = plt.subplots(figsize=(7, 3))
    width = 0.8 / len(models)
    for offset, (label, figures) in enumerate(models):
        values = [100 * (getattr(figures, key) or 0.0) for _, key in metrics]
        target = "" if figures.target_class is None else f" (target class {figures.target_class})"
        bars = axis.bar([i + offset * width for i in range(len(metrics))], values, width,
                        label=label + target)
        axis.bar_label(bars, fmt="%.1f")
    axis.set_xticks([i + width * (len(models) - 1) / 2 for i in range(len(metrics))],
                    [name for name, _ in metrics])
    axis.set_ylabel("%")
    axis.set_ylim(0, 110)
    axis.legend()
    return _png(plt, figure)


def _per_class_bars(plt, result: GateResult) -> bytes | None:
    if result.data["labelled"] is False:
        return None
    models = ([("reference", result.reference)] if result.reference else []) + \
        [("model", result.model)]
    classes = len(result.model.per_class_accuracy)
    figure, axis = plt.subplots(figsize=(7, 3))
    width = 0.8 / len(models)
    for offset, (label, figures) in enumerate(models):
        values = [100 * (v or 0.0) for v in figures.per_class_accuracy]
        axis.bar([c + offset * width for c in range(classes)], values, width, label=label)
    axis.set_xticks([c + width * (len(models) - 1) / 2 for c in range(classes)],
                    [str(c) for c in range(classes)])
    axis.set_xlabel("class")
    axis.set_ylabel("accuracy %")
    axis.legend()
    return _png(plt, figure)


def _activation_bars(plt, result: GateResult) -> bytes | None:
    if not result.activations:
        return None
    rows = result.activations
    triggered = rows[0]["divergence"] is not None
    values = [row["divergence"] if triggered else row["mean_abs"] for row in rows]
    edited = set(result.edited_layers)
    colours = ["#cf222e" if edited & set(row["key_of"]) else "#57606a" for row in rows]
    figure, axis = plt.subplots(figsize=(7, 0.5 + 0.35 * len(rows)))
    axis.barh([", ".join(row["key_of"])[:40] for row in rows], values, color=colours)
    axis.invert_yaxis()
    axis.set_xlabel("triggered vs clean: ||a~ - a||^2 / ||a||^2" if triggered
                    else "mean |activation| on clean samples")
    axis.set_title("red: layers edited against the reference")
    return _png(plt, figure)
