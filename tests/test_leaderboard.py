"""Leaderboard: CI arithmetic, best/tie marking, skipped and failed records, the marked block, and the
judgments' false-alarm rates and power checked by seeded simulation."""

from __future__ import annotations

import hashlib
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy import stats as sp

from gradbench import leaderboard as lb
from gradbench import records
from gradbench import results as res
from gradbench.results import Record, RunSet, fmt
from gradbench.stats import mean_ci

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


def collect(runs: Path, relabel: Any = None) -> tuple[list[Record], list[str]]:
    """The records under ``runs`` and the files that could not be read (``RunSet.collect``)."""
    found = RunSet.collect(runs, relabel)
    return found.records, found.problems


def render_dir(runs: Path, **kw: Any) -> str:
    recs, problems = collect(runs)
    return lb.render(recs, problems=problems, **kw)


BASE = [0.90, 0.91, 0.92, 0.93, 0.94, 0.95]


def test_ci_half_width_is_t_times_s_over_sqrt_n(tmp_path: Path) -> None:
    mean, h, n = mean_ci([1.0, 2.0, 3.0, 4.0])
    s = math.sqrt(5 / 3)  # sample std (ddof=1) of 1..4
    assert (mean, n) == (2.5, 4)
    assert h == pytest.approx(T_975_DF3 * s / 2, rel=1e-12)
    save_many(tmp_path, "a", [1.0, 2.0, 3.0, 4.0])
    assert row(render_dir(tmp_path), "a")[1] == f"**2.500 ± {T_975_DF3 * s / 2:.3f}**"


def test_number_formatting() -> None:
    assert fmt.mean_ci(0.93123, 0.00412) == "0.9312 ± 0.0041"
    assert fmt.mean_ci(20.44, 1.234) == "20.44 ± 1.23"  # h to the mean's decimal place
    assert fmt.mean_ci(0.5, None) == "0.5000"
    assert fmt.sig(812.34) == "812"
    assert fmt.sig(1234.5) == "1230"
    assert fmt.sig(81.234) == "81.2"


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


def test_tie_rules_paired_from_two_shared_seeds_else_welch() -> None:
    a, b = {0: 1.0, 1: 2.0, 2: 3.5}, {0: 1.2, 1: 2.5, 2: 3.0, 7: 9.0}
    kind, p = res.tie_test(a, b)  # 3 shared seeds: paired over them, seed 7 unused
    assert kind == "paired" and p == pytest.approx(sp.ttest_rel([1.0, 2.0, 3.5], [1.2, 2.5, 3.0]).pvalue, rel=1e-12)
    kind, p = res.tie_test({0: 1.0, 1: 2.0}, {0: 1.5, 1: 2.1})  # 2 shared seeds are enough to pair
    assert kind == "paired"
    kind, p = res.tie_test({0: 1.0, 1: 2.0, 2: 2.5}, {2: 1.5, 5: 2.5, 6: 3.0})  # 1 shared seed: Welch
    welch = sp.ttest_ind([1.0, 2.0, 2.5], [1.5, 2.5, 3.0], equal_var=False).pvalue
    assert kind == "welch" and p == pytest.approx(welch, rel=1e-12)
    assert res.is_tied({0: 1.0, 1: 2.0}, {5: 1.5, 6: 2.5})
    assert not res.is_tied({0: 1.0, 1: 1.01}, {5: 5.0, 6: 5.01})
    # a single value on either side: no test, never a tie (such rows are not ranked anyway)
    assert not res.is_tied({0: 0.5}, {0: 0.5})
    assert not res.is_tied({0: 0.5, 1: 0.6}, {3: 0.55})
    # degenerate cases: identical / constant offset (paired), no spread on both sides (Welch)
    assert res.is_tied({0: 1.0, 1: 2.0, 2: 3.0}, {0: 1.0, 1: 2.0, 2: 3.0})
    assert not res.is_tied({0: 1.0, 1: 2.0, 2: 3.0}, {0: 0.9, 1: 1.9, 2: 2.9})
    assert res.is_tied({0: 1.0, 1: 1.0}, {5: 1.0, 6: 1.0})
    assert not res.is_tied({0: 1.0, 1: 1.0}, {5: 1.1, 6: 1.1})


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
    assert "n/a (cannot run a bernoulli node): gumbel" in text  # one line under the table, not a row
    assert "| gumbel " not in text
    assert "node): ste" not in text and "| ste " not in text  # only tables of that node kind list it


def test_corrupt_record_is_reported_and_not_counted(tmp_path: Path) -> None:
    save_many(tmp_path, "a", BASE[:3])
    bad = records.record_path(tmp_path, "toy", "a", "deadbeef0000")
    bad.write_text('{"schema_version": 1, "run_id": "dead')  # truncated mid-write
    recs, problems = collect(tmp_path)
    assert len(recs) == 3
    assert len(problems) == 1 and str(bad) in problems[0]
    text = lb.render(recs, problems=problems)
    assert row(text, "a")[header(text).index("n")] == "3/3"
    assert "Skipped 1 unreadable" in text and str(bad) in text


def test_failed_records_not_in_means_and_the_row_not_ranked(tmp_path: Path) -> None:
    save_many(tmp_path, "a", [1.0, 2.0, 3.0])
    save(tmp_path, make_record("a", 3, 100.0, status="failed"))
    save(tmp_path, make_record("a", 4, 50.0, status="diverged"))
    text = render_dir(tmp_path)
    cols, cells = header(text), row(text, "a")
    mean, h, _ = mean_ci([1.0, 2.0, 3.0])
    assert cells[cols.index("acc ↑")] == f"{fmt.mean_ci(mean, h)} (not ranked)"  # never bold
    assert cells[cols.index("n")] == "3/5"
    assert cells[cols.index("failed")] == "1 diverged, 1 failed"
    assert "5 run records (3 ok, 1 diverged, 1 failed)" in text
    assert "no failed or diverged seed" in text  # the legend says so


def test_row_with_failures_is_never_best_or_tied_even_with_the_best_mean(tmp_path: Path) -> None:
    """2 of 5 seeds diverged: the 3 survivors' mean is the highest, but the row is shown, not ranked."""
    save_many(tmp_path, "steady", [0.80, 0.81, 0.82, 0.83, 0.84])
    save_many(tmp_path, "fragile", [0.95, 0.96, 0.97])
    save(tmp_path, make_record("fragile", 3, None, status="diverged"))
    save(tmp_path, make_record("fragile", 4, None, status="diverged"))
    save_many(tmp_path, "twin", [0.95, 0.96, 0.97, 0.98, 0.99])  # the same survivors plus 2 ok seeds
    recs, _ = collect(tmp_path)
    table = res.decide(recs)[Record.of(recs[0]).table]
    acc = table.rankings["acc"]
    assert acc.best == "twin" and "fragile" not in acc.bold and "fragile" not in acc.p
    assert res.unranked_reason(table.rows["fragile"], "acc") == "2/5 failed or diverged"
    assert table.order == ["twin", "steady", "fragile"]  # ranked rows first, then the unranked
    text = lb.format_table(table)
    cells, cols = row(text, "fragile"), header(text)
    assert "**" not in "".join(cells)
    assert cells[cols.index("acc ↑")].endswith("(not ranked)")
    assert cells[cols.index("n")] == "3/5" and cells[cols.index("failed")] == "2 diverged"
    assert row(text, "twin")[cols.index("acc ↑")].startswith("**")


def test_rows_with_fewer_than_two_ok_seeds_are_shown_not_ranked(tmp_path: Path) -> None:
    save(tmp_path, make_record("lucky", 0, 0.99))  # one seed, the highest mean
    save_many(tmp_path, "a", [0.80, 0.82, 0.84])
    save_many(tmp_path, "b", [0.70, 0.71, 0.72])
    recs, _ = collect(tmp_path)
    table = res.decide(recs)[Record.of(recs[0]).table]
    assert table.rankings["acc"].best == "a" and "lucky" not in table.rankings["acc"].bold
    text = lb.format_table(table)
    assert row(text, "lucky")[1] == "0.9900 (n=1, not ranked)"
    assert row(text, "a")[1].startswith("**") and not row(text, "b")[1].startswith("**")


def test_welch_decides_ties_between_rows_without_shared_seeds(tmp_path: Path) -> None:
    a, b, c = [0.90, 0.93, 0.91], [0.89, 0.92, 0.94, 0.90], [0.70, 0.72, 0.71]
    recs = ([make_record("a", s, v) for s, v in enumerate(a)]
            + [make_record("b", 10 + s, v) for s, v in enumerate(b)]
            + [make_record("c", 20 + s, v) for s, v in enumerate(c)])
    acc = res.decide(recs)[Record.of(recs[0]).table].rankings["acc"]
    assert acc.best == "a" and acc.tied == {"b"}
    assert acc.p["b"] == pytest.approx(sp.ttest_ind(a, b, equal_var=False).pvalue, rel=1e-12)
    assert acc.p["c"] == pytest.approx(sp.ttest_ind(a, c, equal_var=False).pvalue, rel=1e-12) and acc.p["c"] < 0.05


def test_non_finite_values_are_skipped_and_n_shown(tmp_path: Path) -> None:
    save_many(tmp_path, "a", [1.0, None, 3.0])
    save_many(tmp_path, "b", [None])
    text = render_dir(tmp_path)
    # values 1 and 3: s = sqrt(2), h = t(0.975, 1) * sqrt(2) / sqrt(2) = 12.706; a seed's value is
    # missing from the mean, so the row is not ranked in this column (no run drops out silently)
    assert row(text, "a")[1] == "2.00 ± 12.71 (n=2, 1 non-finite, not ranked)"
    assert row(text, "a")[header(text).index("n")] == "3/3"
    assert row(text, "b")[1] == "— (non-finite)"


def test_single_seed_says_no_ci(tmp_path: Path) -> None:
    save(tmp_path, make_record("a", 0, 0.75))
    assert row(render_dir(tmp_path), "a")[1] == "0.7500 (n=1, not ranked)"


def test_duplicate_seed_keeps_newest(tmp_path: Path) -> None:
    save(tmp_path, make_record("a", 0, 0.1, end_utc="2026-01-01T00:00:00Z"), rid="old000000000")
    save(tmp_path, make_record("a", 0, 0.9, end_utc="2026-02-01T00:00:00Z"), rid="new000000000")
    text = render_dir(tmp_path)
    cells = row(text, "a")
    assert cells[1].startswith("0.9000") and cells[header(text).index("n")] == "1/1"


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


def test_an_image_tasks_heading_names_its_dataset() -> None:
    """The dataset is in the heading, in words (a paper-preset table on Fashion-MNIST must say so); a task
    without a dataset setting gets none."""
    fashion = [make_record("a", s, 0.8, preset="paper") for s in range(2)]
    for r in fashion:
        r["task"]["config"] = {"dataset": "fashion-mnist"}
    headings = [ln for ln in lb.render(fashion + [make_record("a", 0, 0.5)]).splitlines() if ln.startswith("### ")]
    assert headings[0].startswith("### toy (data: Fashion-MNIST 28x28; preset: paper;"), headings
    assert headings[1].startswith("### toy (preset: quick;") and "data:" not in headings[1], headings


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
    tables = res.decide(recs, {"bernoulli": ["gumbel"]})
    (key, table), = tables.items()
    assert key == Record.of(recs[0]).table
    assert table.main == "acc" and table.order == ["best", "twin", "worse", "gumbel"]
    acc = table.rankings["acc"]
    assert acc.best == "best" and acc.tied == {"twin"} and acc.bold == {"best", "twin"}
    mean, h, n = table.rows["best"].metrics["acc"]
    assert (mean, h, n) == mean_ci(BASE)
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

    def relabel(record: Record) -> str:
        return record.label.replace("(variant=identity)", "")

    recs, _ = collect(tmp_path, relabel=relabel)
    assert sorted(r.label for r in recs) == ["ste", "ste", "ste", "ste(variant=clipped)"]
    text = lb.render(recs)
    assert row(text, "ste")[header(text).index("n")] == "3/3"
    assert "ste(variant=identity)" not in text
    # without relabel the stored labels stand, and the files are untouched
    plain, _ = collect(tmp_path)
    assert sorted({r.label for r in plain}) == ["ste", "ste(variant=clipped)", "ste(variant=identity)"]
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
    table = res.decide(recs)[Record.of(recs[0]).table]
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


# ----------------------------------------------------------------------------------------------
# The tie rule's false-alarm rate and power, by seeded simulation


def _draw_rows(rng: np.random.Generator, n: int, paired: bool, effect: float = 0.0,
               seed_sd: float = 2.0) -> tuple[dict[int, float], dict[int, float]]:
    """Two rows of ``n`` seeds each: a value is a per-seed effect (sd ``seed_sd``, the task noise a seed
    fixes: same data order, same test set) plus run noise (sd 1). Paired: both rows ran the same seeds, so
    they share the seed effects; unpaired: disjoint seeds, independent seed effects."""
    seed_a = rng.normal(0.0, seed_sd, n)
    seed_b = seed_a if paired else rng.normal(0.0, seed_sd, n)
    a = seed_a + rng.normal(0.0, 1.0, n) + effect
    b = seed_b + rng.normal(0.0, 1.0, n)
    first_b = 0 if paired else 100
    return dict(enumerate(a.tolist())), dict(zip(range(first_b, first_b + n), b.tolist(), strict=True))


def test_tie_false_alarm_rate_is_at_most_alpha_for_rows_from_one_distribution() -> None:
    """Two rows from one distribution, 2 to 5 seeds each, paired (shared seeds, shared seed effects) and
    unpaired (disjoint seeds: Welch's test), 1500 seeded trials per (design, n): the count called
    "not tied" must not exceed the upper binomial bound of a rate of ALPHA = 0.05, per cell and pooled
    over n per design. Each of the 10 checks is at 1e-7, so a rule whose true rate is <= 0.05 fails this
    test with probability <= 1e-6 (for a random simulation seed; with the fixed seed it is deterministic).
    Sensitivity: a pooled rate of 0.065 or more (6000 trials) fails. The paired test's rate is 0.05 exactly
    on normal data, Welch's is lower at small n (about 0.022, 0.033, 0.041, 0.045 for n = 2..5)."""
    rng = np.random.default_rng(20260512)
    trials, check_q = 1500, 1e-7
    for paired in (True, False):
        pooled = 0
        for n in range(2, 6):
            hits = sum(not res.is_tied(*_draw_rows(rng, n, paired)) for _ in range(trials))
            assert hits <= sp.binom.isf(check_q, trials, res.ALPHA), (paired, n, hits / trials)
            pooled += hits
        assert pooled <= sp.binom.isf(check_q, 4 * trials, res.ALPHA), (paired, pooled / (4 * trials))
        assert pooled >= sp.binom.ppf(check_q, 4 * trials, 0.03 if paired else 0.02)  # not blind: a test at all


def test_tie_test_detects_a_three_sd_difference_at_five_seeds() -> None:
    """Power: rows 3 run-sd apart (no shared seed effect: the worst case for pairing), 5 seeds each, 1000
    seeded trials per design. Paired: the rate of "not tied" must match the paired t-test's power from
    the noncentral t (0.936) within a two-sided binomial band at 1e-7 per side; Welch (disjoint seeds):
    its simulated power is 0.98, and the rate must exceed the lower binomial bound of 0.95 at 1e-7.
    False-failure rate of this test: <= 1e-6."""
    rng = np.random.default_rng(99)
    trials, n, q = 1000, 5, 1e-7
    crit, nc = sp.t.ppf(0.975, n - 1), 3.0 / math.sqrt(2.0) * math.sqrt(n)
    power = sp.nct.sf(crit, n - 1, nc) + sp.nct.cdf(-crit, n - 1, nc)
    assert power == pytest.approx(0.936, abs=5e-4)
    hits = sum(not res.is_tied(*_draw_rows(rng, n, True, effect=3.0, seed_sd=0.0)) for _ in range(trials))
    assert sp.binom.ppf(q, trials, power) <= hits <= sp.binom.isf(q, trials, power), hits / trials
    hits = sum(not res.is_tied(*_draw_rows(rng, n, False, effect=3.0, seed_sd=0.0)) for _ in range(trials))
    assert hits >= sp.binom.ppf(q, trials, 0.95), hits / trials


def test_decide_verdicts_are_the_tie_rule() -> None:
    """The table's verdict is exactly ``is_tied`` against the best row, for random rows of 2..5 seeds,
    paired and not (deterministic: no tolerance); a row with an outlier seed takes no part."""
    rng = np.random.default_rng(5)
    for trial in range(150):
        n, paired = 2 + trial % 4, trial % 2 == 0
        a, b = _draw_rows(rng, n, paired, effect=float(rng.choice([0.0, 2.0])))
        recs = ([make_record("a", s, v) for s, v in a.items()] + [make_record("b", s, v) for s, v in b.items()])
        acc = res.decide(recs)[Record.of(recs[0]).table].rankings["acc"]
        outliers = res.outlier_seeds({"a": a, "b": b})
        if outliers:
            assert not acc.tied and acc.best not in outliers and len(outliers) + (acc.best is not None) == 2
            continue
        best, other = (a, b) if acc.best == "a" else (b, a)
        assert acc.best == ("a" if np.mean(list(a.values())) >= np.mean(list(b.values())) else "b")
        assert (len(acc.tied) == 1) == res.is_tied(best, other)


# ----------------------------------------------------------------------------------------------
# Gradient columns and the bias flag


def _with_gradient(rec: dict[str, Any], end: dict[str, Any], start: dict[str, Any] | None = None) -> dict[str, Any]:
    points = [{"checkpoint": "start", "step": 0, **(start or {})}, {"checkpoint": "end", "step": 2000, **end}]
    return {**rec, "gradient": {"checkpoints": points}}


def test_bias_column_combines_end_checkpoint_p_values_by_bonferroni() -> None:
    recs = []
    for est, ps in (("unbiased", [0.3, 0.5, 0.9]), ("biased", [0.001, 0.2, 0.5])):
        for seed, p in enumerate(ps):
            end = {"log10_variance": -2.0, "cosine": 0.9, "cosine_raw": 0.5, "bias_p": p}
            recs.append(_with_gradient(make_record(est, seed, 0.5 + seed / 10), end, start={"bias_p": 1e-9}))
    recs += [_with_gradient(make_record("det", s, 0.4 + s / 10), {"log10_variance": -23.0}) for s in range(3)]
    table = res.decide(recs)[Record.of(recs[0]).table]
    assert table.has_bias
    assert table.rows["unbiased"].bias == (pytest.approx(0.9), 3)  # min(1, 3 * 0.3), the start's p unused
    assert table.rows["biased"].bias == (pytest.approx(0.003), 3)
    assert table.rows["det"].bias is None
    text = lb.format_table(table)
    col = header(text).index("bias (end)")
    assert row(text, "unbiased")[col] == "not flagged (p=0.9)"  # Holm: max(0.9, 2 * 0.003) = 0.9, as shown
    assert row(text, "biased")[col] == "flagged (p=0.003, Holm 0.006)"  # 2 rows with a test: 2 * 0.003
    assert row(text, "det")[col] == "—"
    cos = header(text).index("cos ref (end)")
    assert row(text, "biased")[cos] == "0.9000 ± 0.0000"  # the debiased `cosine`, not `cosine_raw`
    legend = lb.render(recs)
    assert "debiased cosine" in legend and "any unbiased row of a table is flagged is at most 0.05" in legend
    assert res.bias_p([{"gradient": {"checkpoints": [{"bias_p": 0.02}]}}] * 5) == (pytest.approx(0.1), 5)
    assert res.bias_p([{"gradient": {"checkpoints": [{"bias_p": 0.5}]}}] * 3) == (1.0, 3)  # capped at 1


def test_no_bias_column_without_bias_p() -> None:
    recs = [_with_gradient(make_record("a", s, 0.5), {"log10_variance": -2.0, "cosine": 0.8}) for s in range(2)]
    text = lb.render(recs)
    assert "cos ref (end)" in header(text) and "bias (end)" not in header(text)
    assert "bias (end):" not in text  # nor its legend


def _row_records(ps: list[float]) -> list[dict[str, Any]]:
    return [{"gradient": {"checkpoints": [{"bias_p": float(p)}]}} for p in ps]


def test_bias_flag_false_alarm_rate_is_at_most_alpha() -> None:
    """An unbiased estimator's per-seed p-values, calibrated (uniform: the worst case of P(p < a) <= a),
    for rows of 1 to 5 seeds, 10000 seeded trials each: the flag rate must match
    1 - (1 - 0.05/n)^n (0.05, 0.0494, 0.0492, 0.0491, 0.0490), all <= 0.05, within a two-sided binomial
    band at 1e-7 per side per n (false-failure rate of this test <= 1e-6). Sensitivity: a rule without
    the Bonferroni factor flags 1 - 0.95^n (0.226 at n = 5) and fails."""
    rng = np.random.default_rng(31)
    trials, q = 10_000, 1e-7
    for n in range(1, 6):
        rate = 1 - (1 - res.BIAS_ALPHA / n) ** n
        assert rate <= res.BIAS_ALPHA + 1e-12
        flagged = sum(res.bias_p(_row_records(rng.uniform(size=n)))[0] < res.BIAS_ALPHA for _ in range(trials))
        assert sp.binom.ppf(q, trials, rate) <= flagged <= sp.binom.isf(q, trials, rate), (n, flagged / trials)


def test_bias_flag_power_for_a_biased_estimator() -> None:
    """Each seed's bias test sees a shift of 3 standard errors (two-sided z-test p-values); a row of n
    seeds is flagged when some seed's p < 0.05/n, with probability 1 - (1 - pi_n)^n (pi_n the per-seed
    power at level 0.05/n; flagged: 0.851 at n = 1, 0.980 at n = 3, 0.996 at n = 5). 3000 seeded trials per n, the
    flag rate within a two-sided binomial band at 1e-7 per side (false-failure rate <= 1e-6)."""
    rng = np.random.default_rng(32)
    trials, q, shift = 3000, 1e-7, 3.0
    for n in (1, 3, 5):
        crit = sp.norm.isf(res.BIAS_ALPHA / n / 2)
        pi = sp.norm.sf(crit - shift) + sp.norm.cdf(-crit - shift)
        power = 1 - (1 - pi) ** n
        flagged = 0
        for _ in range(trials):
            ps = 2 * sp.norm.sf(np.abs(rng.normal(shift, 1.0, n)))
            flagged += res.bias_p(_row_records(ps))[0] < res.BIAS_ALPHA
        assert sp.binom.ppf(q, trials, power) <= flagged <= sp.binom.isf(q, trials, power), (n, power, flagged)


def test_more_equal_rows_unbold_each_other_row_more_often_as_the_legend_says() -> None:
    """Five rows from one distribution, 5 paired seeds: the best is the luckiest of five, so each other
    row's "not tied" rate exceeds ALPHA; the legend states 0.08 (0.084 in a 20000-trial simulation).
    1200 seeded trials; the per-row rate must be within 5.3 standard errors (estimated from the per-trial
    counts, normal approximation: about 1e-7 two-sided) of 0.084, which also shows it is above 0.05."""
    rng = np.random.default_rng(77)
    trials, k, n = 1200, 5, 5
    counts = []
    for _ in range(trials):
        x = rng.normal(0.0, 2.0, n) + rng.normal(0.0, 1.0, (k, n))
        rows = [dict(enumerate(r.tolist())) for r in x]
        best = int(np.argmax(x.mean(1)))
        counts.append(sum(not res.is_tied(rows[best], rows[i]) for i in range(k) if i != best))
    per_row = np.asarray(counts, float) / (k - 1)
    se = per_row.std(ddof=1) / math.sqrt(trials)
    assert abs(per_row.mean() - 0.084) <= 5.3 * se and per_row.mean() > res.ALPHA, (per_row.mean(), se)


# ----------------------------------------------------------------------------------------------
# Issue 22, item 8: seeds behind a gradient cell, outlier seeds, p-values at the threshold, Holm over a
# table's bias tests, a header counted from the records, older estimator versions, float32 bias flags


def _gradient_row(est: str, cosines: list[float | None], ps: list[float | None]) -> list[dict[str, Any]]:
    recs = []
    for seed, (cos, p) in enumerate(zip(cosines, ps, strict=True)):
        end = {"log10_variance": -2.0, "cosine": cos, "bias_p": p, "bias_sq_raw": 0.25, "mean_norm": 1.0}
        recs.append(_with_gradient(make_record(est, seed, 0.5 + seed / 100), end))
    return recs


def test_gradient_cells_say_how_many_ok_seeds_have_the_figure() -> None:
    """RELAX on toy(target=0.499) had a cosine at 3 of its 5 seeds: the cell says so, and so does a bias cell
    whose row has fewer tests than ok seeds; a row where every seed has the figure shows no count."""
    recs = (_gradient_row("relax", [0.99, None, 0.98, None, 0.97], [0.3, 0.4, None, 0.5, 0.6])
            + _gradient_row("full", [0.5, 0.6, 0.7, 0.8, 0.9], [0.2, 0.3, 0.4, 0.5, 0.6]))
    text = lb.render(recs)
    cos, bias = header(text).index("cos ref (end)"), header(text).index("bias (end)")
    assert row(text, "relax")[cos] == f"{fmt.mean_ci(*mean_ci([0.99, 0.98, 0.97])[:2])} (3/5)"
    assert row(text, "relax")[bias].endswith("; 4/5 seeds)")
    assert row(text, "full")[cos] == fmt.mean_ci(*mean_ci([0.5, 0.6, 0.7, 0.8, 0.9])[:2])
    assert "seeds" not in row(text, "full")[bias]
    assert "`(3/5)`" in text  # the legend explains it


TOPK_PRECISION = {"dab": [0.9521, 0.9998, 0.9250], "ste": [0.9991, 0.6243, 0.9985],
                  "perturbed": [1.0, 0.5746, 0.9951], "imle": [0.7634, 0.6128, 0.7246],
                  "blackbox": [0.3280, 0.3671, 0.3160]}  # the committed topk table's seeds


def test_a_row_with_a_collapsed_seed_is_marked_and_never_bold() -> None:
    """topk's straight-through and perturbed were bold, tied with DAB through the spread of one collapsed
    seed each (precision 0.62 and 0.57 against 0.998): now each is marked, named under the table, and not
    ranked in that column; IMLE's seeds (0.76, 0.61, 0.72) are a spread, not an outlier."""
    recs = [make_record(est, s, v) for est, vs in TOPK_PRECISION.items() for s, v in enumerate(vs)]
    table = res.decide(recs)[Record.of(recs[0]).table]
    assert set(table.rows["ste"].outliers["acc"][0].__dict__) >= {"seed", "q", "sds"}
    assert [(lbl, [o.seed for o in table.rows[lbl].outliers.get("acc", [])]) for lbl in TOPK_PRECISION] == [
        ("dab", []), ("ste", [1]), ("perturbed", [1]), ("imle", []), ("blackbox", [])]
    assert table.rankings["acc"].bold == {"dab", "imle"}
    text = lb.format_table(table)
    acc = header(text).index("acc ↑")
    cell = row(text, "ste")[acc]
    assert cell.endswith("(outlier seed 1†, not ranked)") and not cell.startswith("**")
    assert "- † ste, seed 1: acc 0.6243 against the row's median 0.9985 (Dixon's Q 0.998" in text
    assert "- † perturbed, seed 1: acc 0.5746" in text and "† imle" not in text


def test_dixon_q_critical_values_are_the_two_sided_five_percent_points() -> None:
    """OUTLIER_Q95 is the 5% point of Dixon's Q (either end) for normal samples: 20000 seeded samples per n,
    the rate within a two-sided binomial band at 1e-7 around 0.05."""
    rng = np.random.default_rng(41)
    trials, q = 20_000, 1e-7
    for n, crit in res.ranking.OUTLIER_Q95.items():
        x = np.sort(rng.normal(size=(trials, n)), axis=1)
        stat = np.maximum(x[:, 1] - x[:, 0], x[:, -1] - x[:, -2]) / (x[:, -1] - x[:, 0])
        hits = int((stat > crit).sum())
        assert sp.binom.ppf(q, trials, 0.05) <= hits <= sp.binom.isf(q, trials, 0.05), (n, hits / trials)


def _outlier_rate(rng: np.random.Generator, n: int, rows: int, scale: float, trials: int) -> float:
    """How often row 0 of a table of normal rows (row 0's sd ``scale``, the others' 1) gets an outlier seed."""
    hits = 0
    for _ in range(trials):
        values = {f"r{i}": dict(enumerate(rng.normal(0.0, scale if i == 0 else 1.0, n).tolist())) for i in range(rows)}
        hits += "r0" in res.outlier_seeds(values)
    return hits / trials


def test_outlier_false_flag_rate_under_normal_seeds() -> None:
    """Normal seeds, no outlier: a row is marked with probability <= 0.05 whatever its spread (Dixon's level),
    and at most 0.026 when its spread is the table's (simulated: 0.026 / 0.020 / 0.012 at 3 seeds and 2 / 5 /
    17 rows, 0.019 / 0.007 / 0.002 at 5 seeds); a row 10x noisier than the rest: 0.05. 4000 seeded trials per
    case; each rate must stay under the upper binomial bound of its stated figure at 1e-6 (false failure
    <= 1e-5 in all)."""
    rng = np.random.default_rng(43)
    trials, q = 4000, 1e-6
    for n, rows, scale, stated in ((3, 2, 1.0, 0.026), (3, 5, 1.0, 0.020), (5, 5, 1.0, 0.007), (3, 5, 10.0, 0.05),
                                    (5, 5, 10.0, 0.05), (5, 2, 3.0, 0.05)):
        rate = _outlier_rate(rng, n, rows, scale, trials)
        assert rate * trials <= sp.binom.isf(q, trials, stated), (n, rows, scale, rate)


def test_outlier_power_at_five_seeds() -> None:
    """A seed 10 SDs off in a row of 5 normal seeds (table of 5 rows) is marked about 91% of the time
    (simulated); at 3 seeds the rule is weak (about 17%: both other seeds must agree), which the docs say.
    2000 seeded trials: the 5-seed rate must exceed the lower binomial bound of 0.85 at 1e-7."""
    rng = np.random.default_rng(44)
    trials, hits = 2000, 0
    for _ in range(trials):
        values = {f"r{i}": dict(enumerate(rng.normal(0.0, 1.0, 5).tolist())) for i in range(5)}
        values["r0"][0] -= 10.0
        hits += "r0" in res.outlier_seeds(values)
    assert hits >= sp.binom.ppf(1e-7, trials, 0.85), hits / trials


def test_a_p_value_is_never_printed_across_the_threshold() -> None:
    """The committed toy(variant=categorical) cell read "flagged (p=0.05)" for p = 0.0496: printed to two
    digits, 0.0496 became 0.05. Now every printed p is on the same side of 0.05 and of 0.01 as the p itself."""
    assert fmt.pvalue(0.0496, 2) == "0.0496" and fmt.pvalue(0.00996, 2) == "0.00996"
    assert fmt.pvalue(0.0213, 2) == "0.021" and fmt.pvalue(0.0504, 2) == "0.05" and fmt.pvalue(1.0, 2) == "1"
    rng = np.random.default_rng(45)
    for p in np.concatenate([rng.uniform(0.045, 0.055, 2000), rng.uniform(0.009, 0.011, 2000)]).tolist():
        for digits in (1, 2, 3):
            printed = float(fmt.pvalue(p, digits))
            assert (printed < 0.05) == (p < 0.05) and (printed < 0.01) == (p < 0.01), (p, digits)
    recs = _gradient_row("relax", [0.9] * 3, [0.0496 / 3, 0.5, 0.9])
    cell = row(lb.render(recs), "relax")[header(lb.render(recs)).index("bias (end)")]
    assert cell == "flagged (p=0.0496)"


def test_bias_flags_are_holm_adjusted_over_the_table() -> None:
    """The flag reads the row's p after Holm's adjustment over the table's rows with a test: an unbiased
    row at p = 0.0496 among 16 others is not flagged (as the committed table's RELAX was), a biased row far
    below still is."""
    recs = _gradient_row("relax", [0.9] * 5, [0.0496 / 5, 0.5, 0.6, 0.7, 0.8])
    recs += _gradient_row("ste", [0.1] * 5, [1e-9, 1e-8, 1e-7, 1e-6, 1e-5])
    for i in range(15):
        recs += _gradient_row(f"ok{i}", [0.9] * 5, [0.9, 0.8, 0.9, 0.95, 0.99])
    table = res.decide(recs)[Record.of(recs[0]).table]
    assert table.rows["relax"].bias == (pytest.approx(0.0496), 5) and not table.rows["relax"].flagged
    assert table.rows["relax"].bias_holm == pytest.approx(0.0496 * 16)  # second smallest of 17: (17 - 1) x p
    assert table.rows["ste"].flagged and table.rows["ste"].bias_holm == pytest.approx(17 * 5e-9)
    text = lb.format_table(table)
    assert row(text, "relax")[header(text).index("bias (end)")] == "not flagged (p=0.0496, Holm 0.79)"


def test_holm_keeps_the_chance_of_any_false_flag_in_a_table_at_alpha() -> None:
    """Tables of 17 rows with calibrated (uniform) per-seed p-values, 5 seeds each, 12 of them unbiased and
    5 far biased (p = 1e-12): the chance that any unbiased row is flagged must be <= 0.05 (simulated, 3000
    seeded trials, under the upper binomial bound of 0.05 at 1e-7). Sensitivity: without Holm, the same
    tables flag some unbiased row in about 1 - 0.951^12 = 0.45 of trials (the test checks it is > 0.3)."""
    rng = np.random.default_rng(46)
    trials, any_holm, any_plain = 3000, 0, 0
    for _ in range(trials):
        rows = [res.bias_p(_row_records(rng.uniform(size=5)))[0] for _ in range(12)] + [1e-12] * 5
        adjusted = res.ranking.holm(rows)
        any_holm += any(a < res.BIAS_ALPHA for a in adjusted[:12])
        any_plain += any(p < res.BIAS_ALPHA for p in rows[:12])
    assert any_holm <= sp.binom.isf(1e-7, trials, res.BIAS_ALPHA), any_holm / trials
    assert any_plain / trials > 0.3


def test_header_is_counted_from_the_records(tmp_path: Path) -> None:
    """The committed file's footer said 144 runs at seeds 0-2 while its header counted 678: every figure of
    the header now comes from the records (counts, tuning runs set aside, seeds, presets, dates, commits,
    machines), so adding records changes it."""
    for seed in range(4):
        rec = make_record("a", seed, 0.5 + seed / 100, end_utc=f"2026-11-2{seed}T10:00:00Z")
        rec["provenance"].update(hostname="box", cpu_model="Xeon Test")
        rec["cost"]["train_seconds"] = 1800.0
        save(tmp_path, rec)
    text = render_dir(tmp_path)
    assert text.startswith("Built from 4 run records (4 ok).")
    assert "Numbers below come from 4 ok runs made with:" in text
    assert "- seeds: 0-3; presets: quick" in text
    assert "- runs ended: 2026-11-20 10:00 to 2026-11-23 10:00 UTC; training time: 2.0 h in all" in text
    assert "- machines: box (Xeon Test)" in text and "- git: abcdef1" in text
    save(tmp_path, make_record("a", 7, 0.6, sha="1234567abcdef"))
    text = render_dir(tmp_path)
    assert text.startswith("Built from 5 run records (5 ok).") and "- seeds: 0-3,7;" not in text
    assert "- seeds: 0,1,2,3,7" in text and "- git: 1234567, abcdef1" in text


def test_older_estimator_versions_get_rows_of_their_own(tmp_path: Path) -> None:
    """relax version 2 records (before the variance-objective fix) beside version 3 ones: they never share a
    row, so no seed of one version stands in for the other's through the newest-wins rule; the label says
    which code made them and the header counts them."""
    for seed in range(3):
        old = make_record("relax", seed, 0.5, end_utc="2026-11-26T20:00:00Z")
        old["estimator"]["version"] = "2"
        save(tmp_path, old)
    new = make_record("relax", 0, 0.9, end_utc="2026-11-27T20:00:00Z")
    new["estimator"]["version"] = "3"
    save(tmp_path, new)
    runs = RunSet.load(tmp_path, versions={"relax": "3"})
    (table,) = runs.tables().values()
    assert sorted(table) == ["relax", "relax (v2)"]
    assert sorted(table["relax"].records) == [0] and sorted(table["relax (v2)"].records) == [0, 1, 2]
    text = lb.render(runs, versions={"relax": "3"})
    assert "relax 2 (installed: 3; 3 records, rows labelled `(v2)`)" in text
    mixed = RunSet.load(tmp_path)  # without the installed versions: one row, as before
    assert list(mixed.tables().popitem()[1]) == ["relax"]


def test_a_float32_bias_flag_within_rounding_is_marked() -> None:
    """IndeCateR on toy(variant=categorical) was flagged at p = 5e-46 by float32 bias tests with its mean
    estimate 2.6-3.3% of its norm from the exact gradient: float32 rounding (in float64 the same estimator is
    exact, tests/test_gradstats.py). Such a flag is marked ‡ with a footnote; a float64 test's flag, or a
    mismatch of the estimate's own size (straight-through), is not."""
    def rows(est: str, mismatch: float, precision: str | None) -> list[dict[str, Any]]:
        out = []
        for seed in range(5):
            end = {"log10_variance": -13.0, "cosine": 0.9997, "bias_p": 1e-46, "bias_sq_raw": mismatch**2,
                   "mean_norm": 1.0, **({"bias_precision": precision} if precision else {})}
            out.append(_with_gradient(make_record(est, seed, 0.5), end))
        return out
    recs = rows("indecater", 0.03, None) + rows("ste", 1.02, None) + rows("new", 0.03, "float64")
    table = res.decide(recs)[Record.of(recs[0]).table]
    assert [lbl for lbl in ("indecater", "ste", "new") if table.rows[lbl].flag_may_be_rounding] == ["indecater"]
    text = lb.format_table(table)
    col = header(text).index("bias (end)")
    assert row(text, "indecater")[col].startswith("flagged‡ (p=")
    assert row(text, "ste")[col].startswith("flagged (p=") and row(text, "new")[col].startswith("flagged (p=")
    assert "- ‡ indecater: flagged by float32 bias tests, with the mean estimate 3% of its norm away" in text


def _committed_results(root: Path, into: Path) -> Path:
    """A copy of the records under ``results/`` that git tracks (a run someone is making there right now is
    not part of the committed leaderboard); plots as empty files (only their names make links)."""
    import shutil
    import subprocess

    try:
        listed = subprocess.run(["git", "ls-files", "-z", "results"], cwd=root, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    for name in filter(None, listed.decode().split("\0")):
        src, dst = root / name, into / name
        if not src.is_file() or name.endswith(".history.jsonl"):
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        if name.endswith(".png"):
            dst.touch()
        else:
            shutil.copyfile(src, dst)
    return into / "results"


def test_committed_leaderboard_is_current(tmp_path: Path) -> None:
    """leaderboard.md's generated block is what ``gradbench leaderboard --runs results --out leaderboard.md``
    makes of the committed records today: its header and tables cannot go stale."""
    from gradbench.cli import installed_versions, unsupported_by_kind
    from gradbench.compare import registry_label

    root = Path(__file__).resolve().parent.parent
    committed = (root / "leaderboard.md").read_text(encoding="utf-8")
    results, versions = _committed_results(root, tmp_path), installed_versions()
    runs = RunSet.load(results, registry_label, versions)
    links = {key: lb.plot_links(results, tmp_path / "leaderboard.md", key) for key in runs.tables()}
    text = lb.render(runs, unsupported_by_kind(), links=links, versions=versions)
    block = f"{lb.BEGIN}\n{text.rstrip()}\n{lb.END}"
    assert block in committed, "leaderboard.md is stale: gradbench leaderboard --runs results --out leaderboard.md"
