"""The README documents what the code offers (a check in Datasette's spirit)."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def test_every_environment_variable_is_documented():
    settings = (ROOT / "playground" / "settings.py").read_text()
    names = set(re.findall(r'(?:getenv|envbool|envint|envfloat|envlist)\("([A-Z_]+)"', settings))
    assert len(names) > 20
    missing = sorted(name for name in names if f"`{name}`" not in README)
    assert missing == []


def test_the_quick_start_opens_with_the_two_commands():
    quick_start = README.split("## Quick start", 1)[1]
    blocks = re.findall(r"```sh\n(.*?)```", quick_start, re.S)
    assert blocks[:2] == ["make run\n", "make test\n"]


def test_ci_runs_exactly_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    assert ci.strip().splitlines()[-1] == "make test"


def test_the_readme_quotes_benchmark_figures():
    assert "BENCHMARK-TABLE" not in README
