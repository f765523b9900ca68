"""The README's and docs' tables of estimators and tasks follow the registry, and the README's verdict
table follows claims.md (gradbench.docs_tables).

The committed blocks must be what ``python -m gradbench.docs_tables`` writes, every built-in must have
a row with words of its own (not the docstring fallback), and a change in the registry must show in the
tables: a stale table fails here until it is regenerated. Deterministic: no false failures.
"""

from __future__ import annotations

import re
import shutil
import typing

import pytest

from gradbench import docs_tables
from gradbench.registry import BUILTIN_ESTIMATORS, BUILTIN_TASKS, get_estimator_class, get_task_class

EXPECTED_BLOCKS = {"README.md": ["claims", "estimators", "tasks"], "docs/estimators.md": ["estimators-glance"],
                   "docs/tasks.md": ["tasks-summary"]}


def _text(name: str) -> str:
    return (docs_tables.ROOT / name).read_text()


def _rows(table: str) -> dict[str, list[str]]:
    """A markdown table's rows by their first cell (the name, without backticks)."""
    rows = {}
    for line in table.splitlines()[2:]:
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        rows[cells[0].strip("`")] = cells
    return rows


@pytest.mark.parametrize("name", list(EXPECTED_BLOCKS))
def test_committed_tables_match_the_registry(name):
    text = _text(name)
    assert docs_tables.blocks(text) == EXPECTED_BLOCKS[name], "a marked block is missing or renamed"
    assert docs_tables.rewrite(text) == text, (
        f"{name}: its tables differ from the registry; run python -m gradbench.docs_tables")
    assert docs_tables.main(["--check"]) == 0


def test_every_built_in_has_a_row_and_words_of_its_own():
    assert set(docs_tables.README_ESTIMATORS) == set(BUILTIN_ESTIMATORS)
    stochastic = {n for n in BUILTIN_ESTIMATORS if get_estimator_class(n).supports & docs_tables.STOCHASTIC}
    assert set(docs_tables.GLANCE) == stochastic
    assert set(docs_tables.README_TASKS) == set(docs_tables.DOCS_TASKS) == set(BUILTIN_TASKS)
    assert set(_rows(docs_tables.readme_estimators())) == set(BUILTIN_ESTIMATORS)
    assert set(_rows(docs_tables.estimators_glance())) == stochastic
    assert set(_rows(docs_tables.readme_tasks())) == set(_rows(docs_tables.tasks_summary())) == set(BUILTIN_TASKS)
    for name in BUILTIN_TASKS:
        for metric in get_task_class(name).test_metrics():
            assert metric in docs_tables.METRIC_LABELS, f"{name}: no README label for metric {metric!r}"


@pytest.mark.parametrize("name", list(BUILTIN_TASKS))
def test_a_tasks_node_cells_name_every_node_setting(name):
    """The node cells are words; they must at least name every value of the task's node setting."""
    cls = get_task_class(name)
    key = cls.node_key
    if not key:
        return
    values = typing.get_args(typing.get_type_hints(cls.Config)[key])
    for cell in (docs_tables.README_TASKS[name][0], docs_tables.DOCS_TASKS[name][0]):
        missing = [v for v in values if f"`{v}`" not in cell and f"{key}={v}`" not in cell]
        assert not missing, f"{name}: node cell {cell!r} does not name {missing}"


def test_a_registry_change_shows_in_the_tables(monkeypatch, tmp_path):
    """The derived cells come from the registry: narrowing relax's kinds and changing a default and a
    preset's steps changes the README and docs/estimators.md, which --check reports and a rewrite fixes."""
    relax, sort = get_estimator_class("relax"), get_task_class("sort")
    for name in [*EXPECTED_BLOCKS, "claims.md"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(docs_tables.ROOT / name, tmp_path / name)
    monkeypatch.setattr(relax, "supports", frozenset({"bernoulli"}))
    monkeypatch.setattr(relax, "batchable", True)
    monkeypatch.setattr(sort, "presets", {**sort.presets, "quick": type(sort.presets["quick"])(
        "quick", steps=123, eval_every=10, config=sort.presets["quick"].config)})
    assert set(docs_tables.stale(tmp_path)) == {"README.md", "docs/estimators.md"}
    assert docs_tables.main(["--check", "--root", str(tmp_path)]) == 1
    readme = _rows(docs_tables.readme_estimators())
    assert readme["relax"][1] == "bernoulli"
    assert _rows(docs_tables.estimators_glance())["relax"][-1] == "yes, no"
    assert "123 steps" in _rows(docs_tables.readme_tasks())["sort"][2]
    assert docs_tables.main(["--root", str(tmp_path)]) == 0
    assert docs_tables.stale(tmp_path) == []


@pytest.mark.parametrize("value,text", [(1.0, "1"), (0.5, "0.5"), (0.01, "1e-2"), (0.003, "3e-3"), (2.5e-4, "2.5e-4"),
                                        (False, "false"), (200_000, "200,000"), (64, "64"), ("rloo", "rloo")])
def test_defaults_are_written_as_the_docs_write_them(value, text):
    assert docs_tables.number(value) == text


def test_the_readme_verdicts_are_claims_mds_own(tmp_path):
    """The README's verdict table is claims.md's side-by-side table with its anchors pointed into claims.md:
    a remade report (a verdict changed) makes the README stale until the block is rewritten; a report
    without the table is refused in one line, naming the command that makes it."""
    table = docs_tables.readme_claims()
    report = _text("claims.md")
    assert table.replace("](claims.md#", "](#") in report
    assert "](#" not in table and table.count("\n") == len(_rows(table)) + 2
    shutil.copy(docs_tables.ROOT / "README.md", tmp_path / "README.md")
    (tmp_path / "claims.md").write_text(report)
    assert "README.md" not in docs_tables.stale(tmp_path)
    row = table.splitlines()[2]  # the first claim's row: its first verdict turned into another
    verdict = re.search(r"\*\*([^*]+)\*\*", row).group(1)
    remade = row.replace(f"**{verdict}**", "**not supported**" if verdict == "supported" else "**supported**", 1)
    remade = remade.replace("](claims.md#", "](#")
    assert remade != row.replace("](claims.md#", "](#")
    (tmp_path / "claims.md").write_text(report.replace(row.replace("](claims.md#", "](#"), remade, 1))
    assert "README.md" in docs_tables.stale(tmp_path)
    assert docs_tables.main(["--root", str(tmp_path)]) == 0
    assert remade.replace("](#", "](claims.md#") in (tmp_path / "README.md").read_text()
    (tmp_path / "claims.md").write_text("# a report without its side-by-side table\n")
    with pytest.raises(ValueError, match="no 'Verdicts side by side' table; make it with gradbench study"):
        docs_tables.readme_claims(tmp_path)
