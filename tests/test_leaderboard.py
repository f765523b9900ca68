"""Leaderboard: CI arithmetic, best/tie marking, skipped and failed records, the marked block."""

from __future__ import annotations

import hashlib
import math
import sys
from pathlib import Path
from typing import Any

import pytest

from gradbench import leaderboard as lb
from gradbench import records

T_975_DF3 = 3.182446305284263  # t quantile for 4 seeds, from tables (not from scipy)


def make_record(est: str, seed: int, value: float | None, *, task: str = "toy", label: str | None = None,
                preset: str = "quick", status: str = "ok", other: float | None = 1.0,
                end_utc: str = "2026-11-26T20:00:03Z", budget: dict[str, Any] | None = None,
                sha: str = "abcdef1234567890", dirty: bool = False) -> dict[str, Any]:
    return {
        "schema_version": 1, "run_id": f"{est}{seed}{label}{preset}{end_utc}{budget}", "status": status,
        "error": None if status == "ok" else "boom",
        "task": {"name": task, "version": "1", "config": {}, "label": label or task,
                 "node": {"kind": "bernoulli", "shape": [100]}},
        "estimator": {"name": est.split("(")[0], "version": "1", "config": {}, "label": est,
                      "unbiased": True},
        "preset": preset, "seed": seed, "budget": budget or {"steps": 2000},
        "metrics": {"acc": {"value": value, "higher_is_better": True},
                    "loss": {"value": other, "higher_is_better": False}},
        "main_metric": "acc", "gradient": {},
        "cost": {"cost_evals_per_step": 2, "steps": 2000, "steps_per_s": 812.34, "train_seconds": 2.46,
                 "peak_memory_mb": 300.1, "peak_memory_kind": "rss"},
        "provenance": {"gradbench_version": "0.1.0", "git_sha": sha, "git_dirty": dirty,
                       "torch": "2.13.0+cpu", "python": "3.11.7", "cuda": None, "device": "cpu",
                       "device_name": "cpu-box", "hostname": "h", "argv": [],
                       "start_utc": "2026-11-26T20:00:00Z", "end_utc": end_utc},
    }


def save(runs: Path, rec: dict[str, Any], rid: str | None = None) -> Path:
    rid = rid or hashlib.sha256(rec["run_id"].encode()).hexdigest()[:12]
    path = records.record_path(runs, rec["task"]["name"], rec["estimator"]["name"], rid)
    records.atomic_write_json(path, rec)
    return path


def save_many(runs: Path, est: str, values: list[float | None], **kw: Any) -> None:
    for seed, v in enumerate(values):
        save(runs, make_record(est, seed, v, **kw))


def row(text: str, label: str) -> list[str]:
    """The cells of the first table row whose estimator cell is ``label``."""
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0] == label:
            return cells
    raise AssertionError(f"no row {label!r} in:\n{text}")


def header(text: str) -> list[str]:
    line = next(ln for ln in text.splitlines() if ln.startswith("| estimator"))
    return [c.strip() for c in line.strip().strip("|").split("|")]


def render_dir(runs: Path, **kw: Any) -> str:
    recs, problems = lb.collect(runs)
    return lb.render(recs, problems=problems, **kw)


BASE = [0.90, 0.91, 0.92, 0.93, 0.94, 0.95]


def test_ci_half_width_is_t_times_s_over_sqrt_n(tmp_path: Path) -> None:
    mean, h, n = lb.mean_ci([1.0, 2.0, 3.0, 4.0])
    s = math.sqrt(5 / 3)  # sample std (ddof=1) of 1..4
    assert (mean, n) == (2.5, 4)
    assert h == pytest.approx(T_975_DF3 * s / 2, rel=1e-12)
    save_many(tmp_path, "a", [1.0, 2.0, 3.0, 4.0])
    assert row(render_dir(tmp_path), "a")[1] == f"**2.500 ± {T_975_DF3 * s / 2:.3f}**"


def test_number_formatting() -> None:
    assert lb.format_mean_ci(0.93123, 0.00412) == "0.9312 ± 0.0041"
    assert lb.format_mean_ci(20.44, 1.234) == "20.44 ± 1.23"  # h to the mean's decimal place
    assert lb.format_mean_ci(0.5, None) == "0.5000"
    assert lb.format_sig(812.34) == "812"
    assert lb.format_sig(1234.5) == "1230"
    assert lb.format_sig(81.234) == "81.2"


def test_best_bold_clearly_worse_plain_noise_tie_bold(tmp_path: Path) -> None:
    noise = [0.001, -0.002, 0.0005, -0.001, 0.0015, -0.0012]
    save_many(tmp_path, "best", BASE)
    save_many(tmp_path, "worse", [v - 0.2 + e for v, e in zip(BASE, noise, strict=True)])
    save_many(tmp_path, "twin", [v + e for v, e in zip(BASE, noise, strict=True)])
    text = render_dir(tmp_path)

    acc = header(text).index("acc ↑")
    assert row(text, "best")[acc].startswith("**")
    assert row(text, "twin")[acc].startswith("**"), "equal within noise must be marked as tied"
    assert not row(text, "worse")[acc].startswith("**")
    # sorted by the main metric, best first
    lines = [ln for ln in text.splitlines() if ln.startswith("| ") and "estimator" not in ln]
    order = [ln.split("|")[1].strip() for ln in lines]
    assert order.index("worse") == 2
    # the decision matches the paired test it claims to use
    from scipy import stats
    worse = [v - 0.2 + e for v, e in zip(BASE, noise, strict=True)]
    assert stats.ttest_rel(BASE, worse).pvalue < 1e-6
    assert "ttest_rel" in text and "p ≥ 0.05" in text


def test_tie_rules_without_enough_shared_seeds() -> None:
    # single seed on one side: only an exactly equal mean ties
    assert lb.is_tied({0: 0.5}, {0: 0.5})
    assert not lb.is_tied({0: 0.5}, {0: 0.5001})
    # no shared seeds: CI overlap decides
    assert lb.is_tied({0: 1.0, 1: 2.0}, {5: 1.5, 6: 2.5})
    assert not lb.is_tied({0: 1.0, 1: 1.01}, {5: 5.0, 6: 5.01})
    # a constant non-zero paired difference is not a tie, identical values are
    assert not lb.is_tied({0: 1.0, 1: 2.0, 2: 3.0}, {0: 0.9, 1: 1.9, 2: 2.9})
    assert lb.is_tied({0: 1.0, 1: 2.0, 2: 3.0}, {0: 1.0, 1: 2.0, 2: 3.0})


def test_lower_is_better_column_picks_minimum(tmp_path: Path) -> None:
    for seed in range(4):
        save(tmp_path, make_record("a", seed, 0.5 + seed / 100, other=1.0 + seed / 100))
        save(tmp_path, make_record("b", seed, 0.5 + seed / 100, other=3.0 + seed / 100))
    text = render_dir(tmp_path)
    loss = header(text).index("loss ↓")
    assert row(text, "a")[loss].startswith("**")
    assert not row(text, "b")[loss].startswith("**")


def test_unsupported_pairs_show_na(tmp_path: Path) -> None:
    save_many(tmp_path, "a", BASE[:3])
    text = render_dir(tmp_path, unsupported={"bernoulli": ["gumbel"], "sign": ["ste"]})
    cells = row(text, "gumbel")
    assert cells[1:3] == ["n/a", "n/a"]
    assert "| ste " not in text  # only tables of that node kind get the rows


def test_corrupt_record_is_reported_and_not_counted(tmp_path: Path) -> None:
    save_many(tmp_path, "a", BASE[:3])
    bad = records.record_path(tmp_path, "toy", "a", "deadbeef0000")
    bad.write_text('{"schema_version": 1, "run_id": "dead')  # truncated mid-write
    recs, problems = lb.collect(tmp_path)
    assert len(recs) == 3
    assert len(problems) == 1 and str(bad) in problems[0]
    text = lb.render(recs, problems=problems)
    assert row(text, "a")[header(text).index("n")] == "3"
    assert "Skipped 1 unreadable" in text and str(bad) in text


def test_failed_records_not_in_means(tmp_path: Path) -> None:
    save_many(tmp_path, "a", [1.0, 2.0, 3.0])
    save(tmp_path, make_record("a", 3, 100.0, status="failed"))
    save(tmp_path, make_record("a", 4, 50.0, status="diverged"))
    text = render_dir(tmp_path)
    cols, cells = header(text), row(text, "a")
    assert cells[cols.index("acc ↑")].startswith("**2.000 ± ")
    assert cells[cols.index("n")] == "3"
    assert cells[cols.index("failed")] == "1 diverged, 1 failed"
    assert "5 run records (3 ok, 1 diverged, 1 failed)" in text


def test_non_finite_values_are_skipped_and_n_shown(tmp_path: Path) -> None:
    save_many(tmp_path, "a", [1.0, None, 3.0])
    save_many(tmp_path, "b", [None])
    text = render_dir(tmp_path)
    # values 1 and 3: s = sqrt(2), h = t(0.975, 1) * sqrt(2) / sqrt(2) = 12.706
    assert row(text, "a")[1] == "**2.00 ± 12.71 (n=2)**"
    assert row(text, "a")[header(text).index("n")] == "3"
    assert row(text, "b")[1] == "— (non-finite)"


def test_single_seed_says_no_ci(tmp_path: Path) -> None:
    save(tmp_path, make_record("a", 0, 0.75))
    assert "0.7500 (n=1, no CI)" in row(render_dir(tmp_path), "a")[1]


def test_duplicate_seed_keeps_newest(tmp_path: Path) -> None:
    save(tmp_path, make_record("a", 0, 0.1, end_utc="2026-01-01T00:00:00Z"), rid="old000000000")
    save(tmp_path, make_record("a", 0, 0.9, end_utc="2026-02-01T00:00:00Z"), rid="new000000000")
    text = render_dir(tmp_path)
    cells = row(text, "a")
    assert cells[1].startswith("**0.9000") and cells[header(text).index("n")] == "1"


def test_separate_tables_per_label_preset_and_budget(tmp_path: Path) -> None:
    save_many(tmp_path, "a", [0.1, 0.2])
    save_many(tmp_path, "a", [0.3, 0.4], label="toy(k=2)")
    save_many(tmp_path, "a", [0.5, 0.6], preset="full")
    save_many(tmp_path, "a", [0.7, 0.8], budget={"seconds": 5})
    text = render_dir(tmp_path)
    headings = [ln for ln in text.splitlines() if ln.startswith("### ")]
    assert len(headings) == 4
    assert any(h.startswith("### toy(k=2) (preset: quick") for h in headings)
    assert any("preset: full" in h for h in headings)
    assert any("seconds=5" in h for h in headings)
    assert all("node: bernoulli" in h and "main metric: acc ↑" in h for h in headings)


def test_header_lists_code_and_hardware(tmp_path: Path) -> None:
    save(tmp_path, make_record("a", 0, 0.5))
    save(tmp_path, make_record("a", 1, 0.6, sha="1234567abcdef", dirty=True))
    text = render_dir(tmp_path)
    assert "gradbench: 0.1.0" in text
    assert "git: 1234567-dirty, abcdef1" in text
    assert "torch: 2.13.0+cpu" in text and "devices: cpu-box" in text


def test_write_keeps_prose_around_markers(tmp_path: Path) -> None:
    runs, out = tmp_path / "runs", tmp_path / "leaderboard.md"
    save_many(runs, "a", BASE[:3])
    out.write_text(f"# Mine\n\nIntro prose.\n\n{lb.BEGIN}\nstale table\n{lb.END}\n\nOutro prose.\n")
    text, problems = lb.build(runs, out)
    new = out.read_text()
    assert problems == []
    assert new.startswith("# Mine\n\nIntro prose.\n\n" + lb.BEGIN)
    assert new.endswith(lb.END + "\n\nOutro prose.\n")
    assert "stale table" not in new and text.strip() in new
    lb.build(runs, out)
    assert out.read_text() == new  # regenerating is stable
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_write_new_file_has_title_and_markers(tmp_path: Path) -> None:
    out = tmp_path / "sub" / "leaderboard.md"
    lb.write(out, "hello")
    content = out.read_text()
    assert content.startswith("# gradbench leaderboard\n")
    assert "gradbench leaderboard`" in content and f"{lb.BEGIN}\nhello\n{lb.END}" in content
    assert out.stat().st_mode & 0o044  # readable by others, unlike mkstemp's default


def test_no_torch_import() -> None:
    """The leaderboard must stay importable and fast without torch (checked in a fresh interpreter)."""
    import subprocess

    code = "import sys, gradbench.leaderboard; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


# ----------------------------------------------------------------------------------------------
# Deciding apart from formatting, relabelling, a missing runs folder, execution paths


def test_decide_returns_verdicts_and_row_statistics_without_markdown(tmp_path: Path) -> None:
    noise = [0.001, -0.002, 0.0005, -0.001, 0.0015, -0.0012]
    recs = ([make_record("best", s, v) for s, v in enumerate(BASE)]
            + [make_record("twin", s, v + e) for s, (v, e) in enumerate(zip(BASE, noise, strict=True))]
            + [make_record("worse", s, v - 0.2 + e) for s, (v, e) in enumerate(zip(BASE, noise, strict=True))])
    tables = lb.decide(recs, {"bernoulli": ["gumbel"]})
    (key, table), = tables.items()
    assert key == lb.table_key(recs[0])
    assert table.main == "acc" and table.order == ["best", "twin", "worse", "gumbel"]
    acc = table.rankings["acc"]
    assert acc.best == "best" and acc.tied == {"twin"} and acc.bold == {"best", "twin"}
    mean, h, n = table.rows["best"].metrics["acc"]
    assert (mean, h, n) == lb.mean_ci(BASE)
    assert table.rows["best"].n_ok == 6 and table.rows["best"].steps_per_s == {"none": 812.34}
    assert table.rows["gumbel"].unsupported
    # the verdicts are what the markdown shows
    text = lb.format_table(table)
    assert row(text, "twin")[1].startswith("**") and not row(text, "worse")[1].startswith("**")


def test_build_refuses_a_missing_runs_folder(tmp_path: Path) -> None:
    from gradbench.errors import UsageError

    out = tmp_path / "leaderboard.md"
    with pytest.raises(UsageError, match="does not exist") as info:
        lb.build(tmp_path / "nope", out)
    assert "\n" not in str(info.value)
    assert not out.exists()  # nothing written over a real leaderboard
    (tmp_path / "file").write_text("x")
    with pytest.raises(UsageError, match="not a folder"):
        lb.build(tmp_path / "file", out)


def test_relabel_joins_old_labels_to_the_current_row(tmp_path: Path) -> None:
    save(tmp_path, make_record("ste(variant=identity)", 0, 0.5))  # stored under the old label rule
    save(tmp_path, make_record("ste(variant=identity)", 1, 0.6))
    save(tmp_path, make_record("ste", 2, 0.7))  # stored under the new one
    save(tmp_path, make_record("ste(variant=clipped)", 0, 0.1))

    def relabel(record: dict[str, Any]) -> str:
        return record["estimator"]["label"].replace("(variant=identity)", "")

    recs, _ = lb.collect(tmp_path, relabel=relabel)
    assert sorted(r["estimator"]["label"] for r in recs) == ["ste", "ste", "ste", "ste(variant=clipped)"]
    text = lb.render(recs)
    assert row(text, "ste")[header(text).index("n")] == "3"
    assert "ste(variant=identity)" not in text
    # without relabel the stored labels stand, and the files are untouched
    plain, _ = lb.collect(tmp_path)
    assert sorted({r["estimator"]["label"] for r in plain}) == ["ste", "ste(variant=clipped)", "ste(variant=identity)"]
    out = tmp_path / "lb.md"
    lb.build(tmp_path, out, relabel=relabel)
    assert "| ste " in out.read_text() and "variant=identity" not in out.read_text()


def _timed(est: str, seed: int, steps_per_s: float, used: str | None) -> dict[str, Any]:
    rec = make_record(est, seed, 0.5 + seed / 100)
    rec["cost"]["steps_per_s"] = steps_per_s
    if used is not None:
        rec["accel"] = {"requested": "auto", "used": used, "reason": "test"}
    return rec


def test_steps_per_s_never_mixes_execution_paths() -> None:
    recs = [_timed("a", 0, 130.0, None), _timed("a", 1, 142.0, "none"),  # no accel block = eager
            _timed("a", 2, 2300.0, "graph"), _timed("a", 3, 2500.0, "graph"),
            _timed("b", 0, 800.0, "none"), _timed("b", 1, 900.0, "none"),
            _timed("c", 0, 3000.0, "compile")]
    table = lb.decide(recs)[lb.table_key(recs[0])]
    assert table.rows["a"].steps_per_s == {"none": 136.0, "graph": 2400.0}
    assert not table.eager_only and table.paths == ["none", "graph", "compile"]
    text = lb.render(recs)
    speed = header(text).index("steps/s")
    assert row(text, "a")[speed] == "136 (eager) / 2400 (graph)"
    assert row(text, "b")[speed] == "850 (eager)"  # named: other rows of this table ran another path
    assert row(text, "c")[speed] == "3000 (compile)"
    assert "- execution path (steps/s): eager, graph, compile" in text
    assert "never a blend" in text  # the legend explains the named figures


def test_all_eager_tables_show_plain_steps_per_s() -> None:
    eager = [_timed("a", s, 800.0 + s, None) for s in range(2)] + [_timed("b", 0, 500.0, "none")]
    fast = [{**_timed("a", 0, 2000.0, "graph"), "preset": "full"}]
    text = lb.render(eager + fast)
    full, quick = text.split("### toy (preset: quick")  # tables sorted by key: full before quick
    assert row(quick, "a")[header(quick).index("steps/s")] == "800"
    assert row(quick, "b")[header(quick).index("steps/s")] == "500"
    assert row(full, "a")[header(full).index("steps/s")] == "2000 (graph)"
    only_eager = lb.render(eager)
    assert "- execution path (steps/s): eager" in only_eager and "never a blend" not in only_eager
