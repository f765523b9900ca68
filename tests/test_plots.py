"""plots: failed and diverged runs stay visible (legend counts, dashed partial curves ending in x), and the
gradient-variance figure draws the variance along training with the checkpoints as markers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("matplotlib")

from gradbench import plots, records  # noqa: E402


def _record(est: str, seed: int, status: str = "ok", checkpoints: list[dict[str, Any]] | None = None
            ) -> dict[str, Any]:
    return {
        "schema_version": 1, "run_id": f"{est}{seed:02d}abcdef0", "status": status,
        "error": None if status == "ok" else "loss became nan",
        "task": {"name": "toy", "version": "1", "config": {}, "label": "toy", "node": {"kind": "bernoulli"}},
        "estimator": {"name": est, "version": "1", "config": {}, "label": est},
        "preset": "quick", "seed": seed, "budget": {"steps": 100},
        "metrics": {"gap": {"value": 0.1 if status == "ok" else None, "higher_is_better": False}},
        "main_metric": "gap", "gradient": {"checkpoints": checkpoints or []}, "cost": {},
        "provenance": {"end_utc": "2026-01-01T00:00:00Z"},
    }


def _save(runs: Path, rec: dict[str, Any], history: list[dict[str, Any]]) -> None:
    path = records.record_path(runs, "toy", rec["estimator"]["name"], rec["run_id"])
    records.atomic_write_json(path, rec)
    records.history_path(path).write_text("".join(json.dumps(h) + "\n" for h in history))


def _history(last: int, trace: bool = False, seed: int = 0) -> list[dict[str, Any]]:
    rows = []
    for step in range(0, last + 1, 10):
        row: dict[str, Any] = {"step": step, "seconds": step / 100, "test/gap": 1.0 / (1 + step) + seed / 100}
        if trace:
            row["grad/log10_variance"] = -1.0 - step / 100 + seed / 10
        rows.append(row)
    return rows


@pytest.fixture()
def captured(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Each figure's axes as ``plots._save`` receives them, by file-name suffix."""
    seen: dict[str, Any] = {}
    original = plots._save

    def spy(fig: Any, path: Path) -> Path:
        ax = fig.axes[0]
        seen[path.name.split("--")[1]] = {
            "labels": ax.get_legend_handles_labels()[1],
            "lines": [(ln.get_marker(), ln.get_linestyle(), list(ln.get_xdata()), list(ln.get_ydata()))
                      for ln in ax.get_lines()]}
        return original(fig, path)

    monkeypatch.setattr(plots, "_save", spy)
    return seen


def test_failed_and_diverged_runs_are_counted_and_drawn(tmp_path: Path, captured: dict[str, Any]) -> None:
    for seed in range(3):
        _save(tmp_path, _record("dab", seed), _history(100, seed=seed))
    _save(tmp_path, _record("dab", 3, "diverged"), _history(40))  # diverged after its step-40 evaluation
    _save(tmp_path, _record("dab", 4, "failed"), [])  # failed before logging anything
    for seed in range(2):
        _save(tmp_path, _record("ste", seed), _history(100, seed=seed))
    written = plots.plot(tmp_path)
    assert {p.name.split("--")[1] for p in written} == {"curve_by_step.png", "curve_by_time.png"}
    fig = captured["curve_by_step.png"]
    assert "dab (3/5 ok; 1/5 diverged, 1/5 failed)" in fig["labels"] and "ste (n=2)" in fig["labels"]
    ends = [line for line in fig["lines"] if line[0] == "x"]
    assert len(ends) == 1  # the diverged run's curve ends in an x at its last logged evaluation
    assert ends[0][2] == [40.0] and ends[0][3] == [pytest.approx(1.0 / 41)]
    dashed = [line for line in fig["lines"] if line[1] == "--"]
    assert len(dashed) == 1 and dashed[0][2][-1] == 40.0
    by_time = [line for line in captured["curve_by_time.png"]["lines"] if line[0] == "x"]
    assert by_time[0][2] == [0.4]  # the same end point against training seconds


def test_a_row_with_only_failures_still_shows(tmp_path: Path, captured: dict[str, Any]) -> None:
    _save(tmp_path, _record("ste", 0), _history(50))
    _save(tmp_path, _record("relax", 0, "diverged"), _history(20))
    _save(tmp_path, _record("relax", 1, "failed"), [])
    plots.plot(tmp_path)
    assert "relax (0/2 ok; 1/2 diverged, 1/2 failed)" in captured["curve_by_step.png"]["labels"]


def test_variance_along_training_with_checkpoint_markers(tmp_path: Path, captured: dict[str, Any]) -> None:
    for seed in range(2):
        points = [{"checkpoint": "start", "step": 0, "log10_variance": -1.0 + seed / 10},
                  {"checkpoint": "end", "step": 100, "log10_variance": -2.0 + seed / 10}]
        _save(tmp_path, _record("dab", seed, checkpoints=points), _history(100, trace=True, seed=seed))
    old = [{"checkpoint": "start", "step": 0, "log10_variance": -3.0}, {"checkpoint": "end", "step": 100,
                                                                      "log10_variance": -4.0}]
    _save(tmp_path, _record("ste", 0, checkpoints=old), _history(100))  # no trace: an older record
    written = plots.plot(tmp_path)
    assert any(p.name.endswith("--gradient_variance.png") for p in written)
    fig = captured["gradient_variance.png"]
    lines = fig["lines"]
    trace = next(ln for ln in lines if ln[0] in ("None", "") and len(ln[2]) == 11)
    assert trace[2] == [float(s) for s in range(0, 101, 10)]
    assert trace[3][0] == pytest.approx(-0.95) and trace[3][-1] == pytest.approx(-1.95)  # mean of 2 seeds
    markers = [ln for ln in lines if ln[0] == "o"]
    dab = next(ln for ln in markers if ln[1] == "None")  # checkpoints over a trace: markers only
    assert dab[2] == [0.0, 100.0] and dab[3] == [pytest.approx(-0.95), pytest.approx(-1.95)]
    ste = next(ln for ln in markers if ln[1] == "-")  # no trace: the checkpoints joined, as before
    assert ste[3] == [-3.0, -4.0]
    assert fig["labels"] == ["dab (n=2)", "ste (n=1)"]


def test_no_variance_figure_without_measurements(tmp_path: Path) -> None:
    for seed in range(2):
        _save(tmp_path, _record("ste", seed), _history(30, seed=seed))
    written = plots.plot(tmp_path)
    assert written and not any("gradient_variance" in p.name for p in written)
    for path in written:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
