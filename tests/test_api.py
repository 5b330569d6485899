"""The README's Python example runs as written."""
import contextlib
import io
import os
import re

from conftest import ROOT


def readme_example() -> str:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Use from Python"):]
    return re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)


def test_the_readme_example_runs(tmp_path):
    (tmp_path / "fixtures").symlink_to(ROOT / "fixtures")
    cwd, printed = os.getcwd(), io.StringIO()
    os.chdir(tmp_path)
    try:
        namespace = {}
        with contextlib.redirect_stdout(printed):
            exec(compile(readme_example(), "README.md", "exec"), namespace)
    finally:
        os.chdir(cwd)
    assert (tmp_path / "repaired.onnx").is_file()
    assert "attack success" in printed.getvalue()
    assert namespace["before"].quality.attack_success_rate > 0.95
    assert namespace["after"].quality.attack_success_rate <= 0.03
    assert namespace["before"].quality.clean_accuracy - \
        namespace["after"].quality.clean_accuracy <= 0.01
