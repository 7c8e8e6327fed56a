"""The README documents what the code offers (a check in Datasette's spirit)."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def test_every_environment_variable_is_documented():
    settings = (ROOT / "playground" / "settings.py").read_text()
    names = set(re.findall(r'(?:getenv|envbool|envint|envfloat|envlist)\("([A-Z_]+)"', settings))
    assert len(names) > 20
    configuration = README.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    first_cells = [line.split("|")[1] for line in configuration.splitlines() if line.startswith("| `")]
    documented = set(re.findall(r"`([A-Z_]+)`", "".join(first_cells)))
    assert sorted(names - documented) == []


def test_the_quick_start_opens_with_the_two_commands():
    quick_start = README.split("## Quick start", 1)[1]
    assert quick_start.lstrip().startswith("```sh\nmake run\n```\n\n```sh\nmake test\n```\n")


def test_ci_runs_exactly_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    assert ci.strip().splitlines()[-1] == "make test"


def test_the_readme_quotes_benchmark_figures():
    assert "BENCHMARK-TABLE" not in README


def test_the_readme_links_to_files_that_exist():
    targets = re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", README)
    assert "docs/README.md" in targets
    assert [target for target in targets if not (ROOT / target).exists()] == []


def test_every_page_in_docs_is_in_its_index():
    index = (ROOT / "docs" / "README.md").read_text()
    pages = sorted(path.name for path in (ROOT / "docs").glob("*.md") if path.name != "README.md")
    assert pages
    assert [page for page in pages if f"]({page})" not in index] == []
