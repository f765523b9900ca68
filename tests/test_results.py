"""The results layer (gradbench.results): the typed Record view, the RunSet's grouping and selections, the
metric catalogue, the formatter and table writer, the budget helpers and the verdict rules' dispatch."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

import pytest

from gradbench import records
from gradbench.budget import budget_text, budget_words, check_budget, make_budget
from gradbench.errors import UsageError
from gradbench.results import (
    GRADIENT,
    Metric,
    Record,
    RunSet,
    Selection,
    Statement,
    TableKey,
    Verdict,
    claim_metric,
    columns,
    conclude_all,
    fmt,
)
from gradbench.results.verdicts import CONTRADICTED, INCONCLUSIVE, NOT_SUPPORTED, NOT_TESTABLE, SUPPORTED, Side


def _record(est: str = "dab", seed: int = 0, acc: float | None = 0.9, status: str = "ok", **extra: Any
            ) -> dict[str, Any]:
    rec = {
        "schema_version": 1, "run_id": f"{est}-{seed}-{extra.get('end', '')}", "status": status,
        "error": None if status == "ok" else "boom",
        "task": {"name": "toy", "version": "1", "config": {}, "label": "toy", "node": {"kind": "bernoulli",
                                                                                    "shape": [4]}},
        "estimator": {"name": est, "version": "1", "config": {}, "label": est, "unbiased": True},
        "preset": "quick", "seed": seed, "budget": {"steps": 100},
        "metrics": {"acc": {"value": acc, "higher_is_better": True},
                    "valid_acc": {"value": 0.5, "higher_is_better": True}},
        "main_metric": "acc", "cost": {"cost_evals_per_step": 4, "steps_per_s": 10.0, "train_seconds": 2.5},
        "provenance": {"git_sha": "0123456789abcdef", "git_dirty": True, "device_name": "cpu-box", "threads": 2,
                       "argv": ["gradbench", "run"], "end_utc": extra.get("end", "2026-01-01T00:00:00Z")},
    }
    rec.update({k: v for k, v in extra.items() if k != "end"})
    return rec


def _save(runs: Path, rec: dict[str, Any]) -> Path:
    rid = hashlib.sha256(rec["run_id"].encode()).hexdigest()[:12]
    path = records.record_path(runs, rec["task"]["name"], rec["estimator"]["name"], rid)
    records.atomic_write_json(path, rec)
    return path


# ------------------------------------------------------------------------------------------ Record


def test_record_reads_what_a_record_says_and_its_defaults() -> None:
    points = [{"checkpoint": "start", "step": 0, "log10_variance": -1.0},
              {"checkpoint": "end", "step": 100, "log10_variance": -2.0, "bias_p": 0.3}]
    r = Record(_record(gradient={"checkpoints": points}))
    assert (r.run_id, r.status, r.ok, r.task, r.task_label, r.estimator, r.label, r.seed) == (
        "dab-0-", "ok", True, "toy", "toy", "dab", "dab", 0)
    assert r.metric("acc") == 0.9 and r.metric("nope") is None
    assert r.metric_directions() == {"acc": True}  # valid_* is tuning's data, never a result
    assert r.metric_directions(validation=True) == {"acc": True, "valid_acc": True}
    assert r.end is not None and r.end.name == "end" and r.end.stat("bias_p") == 0.3
    assert r.checkpoint("start").stat("log10_variance") == -1.0 and r.checkpoint("middle") is None
    assert r.accel_path == "none" and r.accel is None  # made before accel was recorded: eager
    assert r.evals_per_step == 4 and r.steps_per_s == 10.0 and r.train_seconds == 2.5
    assert r.provenance.short_sha == "0123456-dirty" and r.provenance.argv == ("gradbench", "run")
    assert r.table == TableKey("toy", "quick", "toy", '{"steps": 100}') and r.table.budget_text == "steps=100"
    assert r.table.slug == "toy-quick-steps_100"
    assert Record(_record(acc=None)).metric("acc") is None  # non-finite values are stored as null
    assert Record({"status": "ok"}).problem == "task.name missing"


def test_relabelled_records_keep_the_stored_record() -> None:
    data = _record(est="ste")
    r = Record(data).relabelled("ste(v2)", "toy [tuned]")
    assert (r.label, r.stored_label, r.task_label) == ("ste(v2)", "ste", "toy [tuned]")
    assert data["estimator"]["label"] == "ste" and Record(data).relabelled("").label == "ste"


def test_a_record_reads_its_history(tmp_path: Path) -> None:
    rec = _record()
    rec["run_id"] = "abc"
    path = records.record_path(tmp_path, "toy", "dab", "abc")
    records.atomic_write_json(path, rec)
    rows = [{"step": 10, "seconds": 0.2, "test/acc": 0.5}, {"step": 0, "seconds": 0.0, "test/acc": 0.1},
            {"step": 20, "seconds": 0.4, "test/acc": None}, {"traceback": "x"}]
    records.history_path(path).write_text("".join(json.dumps(h) + "\n" for h in rows))
    assert Record(rec).series(tmp_path, "test/acc") == [(0.0, 0.0, 0.1), (10.0, 10.0, 0.5)]
    assert Record(rec).series(tmp_path, "test/acc", "seconds")[-1] == (10.0, 0.2, 0.5)


# ------------------------------------------------------------------------------------------ RunSet


def test_runset_collects_reports_unreadable_files_and_keeps_the_newest_seed(tmp_path: Path) -> None:
    _save(tmp_path, _record(seed=0, acc=0.1, end="2026-01-01T00:00:00Z"))
    _save(tmp_path, _record(seed=0, acc=0.7, end="2026-02-01T00:00:00Z"))
    _save(tmp_path, _record(seed=1, acc=0.8, status="diverged"))
    bad = records.record_path(tmp_path, "toy", "dab", "deadbeef0000")
    bad.write_text("{")
    runs = RunSet.collect(tmp_path)
    assert len(runs) == 3 and len(runs.problems) == 1 and str(bad) in runs.problems[0]
    (key, table), = runs.tables().items()
    row = table["dab"]
    assert row.records[0].metric("acc") == 0.7  # the newest run of a seed wins
    assert row.values("acc") == {0: 0.7}  # ok records only
    assert row.status(1) == "diverged" and row.status(5) == "not run"
    assert dict(row.statuses()) == {"ok": 1, "diverged": 1}


def test_runset_relabels_rows(tmp_path: Path) -> None:
    _save(tmp_path, _record(est="ste", seed=0))
    _save(tmp_path, _record(est="ste2", seed=1))
    runs = RunSet.collect(tmp_path, relabel=lambda r: "ste" if r.label == "ste2" else "")
    (table,) = runs.tables().values()
    assert list(table) == ["ste"] and sorted(table["ste"].records) == [0, 1]


def test_selections_move_the_chosen_runs_to_a_tuned_table_and_say_what_was_not_chosen() -> None:
    """The chosen setting (lr=1, not the preset's) and its grid runs are at a setting of their own
    (``toy(lr=1)``): they leave the plain tables, and the final runs form the tuned row."""
    grid = [_record(est="dab", seed=s) for s in (0, 1)]
    final = [_record(est="dab", seed=s, acc=0.95) for s in (0, 1, 2)]
    for i, r in enumerate(final):
        r["run_id"] = f"final{i}"
    for r in grid + final:
        r["task"] = {**r["task"], "label": "toy(lr=1)"}
    sel = {"kind": "selection", "task": {"name": "toy", "label": "toy"}, "estimator": {"name": "dab", "label": "dab"},
           "preset": "quick", "budget": {"steps": 100}, "grid": {"lr": ["1", "2"]}, "seeds": [0, 1],
           "final_seeds": [0, 1, 2, 3], "selection_metric": "valid_acc",
           "settings": [{"run_ids": [r["run_id"] for r in grid]}],
           "choice": {"index": 0, "values": {"lr": "1"}, "final_run_ids": ["final0", "final1", "final2", "gone"]}}
    nothing = {**sel, "estimator": {"name": "ste", "label": "ste"}, "choice": None}
    runs = RunSet.of(grid + final).with_selections([Selection(sel), Selection(nothing)])
    key = TableKey("toy", "quick", "toy [tuned]", '{"steps": 100}')
    assert list(runs.tables()) == [key]  # the grid runs left the plain table
    assert sorted(runs.tables()[key]["dab [lr=1]"].records) == [0, 1, 2]
    notes = runs.notes[key]
    assert notes[0].startswith("Tuned on validation: lr ∈ {1, 2}, chosen by the best mean valid_acc over seeds 0,1")
    assert "dab: 1 of its 4 final runs have no record here." in notes
    assert "ste: no setting finished on every tuning seed; nothing to report." in notes


def test_a_tuned_choice_at_the_preset_setting_stays_in_the_plain_table() -> None:
    """The committed classify(node=sort) table lost its straight-through row: the structured stage's runs
    (the preset's lr, seeds 0-2) were also the final runs of a tuning that chose the preset's lr, and the
    tuned table took them. Now a run at the preset's setting stays in its plain table (a final run is in both
    tables); a grid run at the preset's setting fills a plain row's seed only where no other run of it is
    there (it has no gradient statistics); tuning runs at other settings still leave the plain tables."""
    def rec(est: str, seed: int, rid: str, label: str = "toy", end: str = "2026-01-01T00:00:00Z") -> dict[str, Any]:
        r = _record(est=est, seed=seed, end=end)
        r["run_id"], r["task"] = rid, {**r["task"], "label": label}
        return r

    plain = [rec("ste", s, f"ste{s}") for s in range(5)]  # the sweep's runs = the tuning's final runs
    grid_default = [rec("ste", s, f"g-ste{s}", end="2026-02-01T00:00:00Z") for s in range(3)]  # newer, no gradient
    grid_other = [rec("ste", s, f"g-ste-lr3-{s}", "toy(lr=3)") for s in range(3)]
    dab_grid_default = [rec("dab", s, f"g-dab{s}") for s in range(3)]
    dab_final = [rec("dab", s, f"dab-lr3-{s}", "toy(lr=3)") for s in range(5)]  # chose lr=3: not the preset's

    def selection(est: str, grid: list[dict[str, Any]], final: list[dict[str, Any]], lr: str) -> Selection:
        return Selection({"kind": "selection", "task": {"name": "toy", "label": "toy"},
                          "estimator": {"name": est, "label": est}, "preset": "quick", "budget": {"steps": 100},
                          "grid": {"lr": ["1", "3"]}, "seeds": [0, 1, 2], "final_seeds": [0, 1, 2, 3, 4],
                          "selection_metric": "valid_acc", "settings": [{"run_ids": [r["run_id"] for r in grid]}],
                          "choice": {"index": 0, "values": {"lr": lr}, "final_run_ids": [r["run_id"] for r in final]}})

    runs = RunSet.of(plain + grid_default + grid_other + dab_grid_default + dab_final).with_selections([
        selection("ste", grid_default + grid_other, plain, "1"), selection("dab", dab_grid_default, dab_final, "3")])
    tables = runs.tables()
    plain_key = TableKey("toy", "quick", "toy", '{"steps": 100}')
    tuned_key = TableKey("toy", "quick", "toy [tuned]", '{"steps": 100}')
    assert set(tables) == {plain_key, tuned_key}  # no toy(lr=3) table: runs at other settings left
    ste = tables[plain_key]["ste"]
    assert sorted(ste.records) == [0, 1, 2, 3, 4] and {r.run_id for r in ste.records.values()} == {
        f"ste{s}" for s in range(5)}  # the final runs, not the newer grid runs of seeds 0-2
    assert sorted(tables[plain_key]["dab"].records) == [0, 1, 2] and tables[plain_key]["dab"].grid_seeds == {0, 1, 2}
    assert sorted(tables[tuned_key]) == ["dab [lr=3]", "ste [lr=1]"]
    assert sorted(r.run_id for r in runs.set_aside) == sorted(r["run_id"] for r in grid_other)


# ------------------------------------------------------------------------------------------ catalogue


def test_columns_pick_the_main_metric_most_records_name_and_the_first_stated_direction() -> None:
    recs = [Record(_record()), Record(_record(seed=1)),
            Record({**_record(seed=2), "main_metric": "loss",
                    "metrics": {"loss": {"value": 1.0, "higher_is_better": None}}}),
            Record({**_record(seed=3), "metrics": {"loss": {"value": 1.0, "higher_is_better": False}}})]
    main, cols = columns(recs)
    assert main == "acc" and [(m.name, m.higher_is_better) for m in cols] == [("acc", True), ("loss", False)]
    assert [m.column for m in cols] == ["acc ↑", "loss ↓"] and Metric("x", None).column == "x"
    assert columns([]) == (None, [])


def test_gradient_statistics_and_claim_metrics() -> None:
    r = Record(_record(gradient={"checkpoints": [{"checkpoint": "end", "step": 100, "log10_variance": -2.0}]}))
    assert GRADIENT["log10_work_variance"].value(r) == pytest.approx(-2.0 + math.log10(4))
    assert GRADIENT["log10_variance"].value(r, "end") == -2.0 and GRADIENT["cosine"].value(r) is None
    assert claim_metric("gradient.variance").higher_is_better is False
    assert claim_metric("gradient.snr").trace == ("grad/log10_variance", "log10 gradient variance (along training)")
    assert claim_metric("acc", True).trace == ("test/acc", "test acc")
    with pytest.raises(KeyError):
        claim_metric("gradient.colour")


# ------------------------------------------------------------------------------------------ formatting


def test_the_formatter() -> None:
    assert fmt.mean_ci(0.93123, 0.00412) == "0.9312 ± 0.0041" and fmt.sig(812.34) == "812"
    assert fmt.short_mean_ci(0.54949, 0.0231, 5) == "0.5495 ± 0.023" and fmt.short_mean_ci(1.0, None, 0) == "—"
    assert (fmt.pct(0.081), fmt.pct(-math.inf), fmt.pct(math.nan)) == ("+8.1%", "unbounded", "—")
    assert fmt.pvalue(1.3712e-05) == "1.37e-05" and fmt.pvalue(0.0213, 2) == "0.021"
    assert fmt.seeds_text([2, 0, 1]) == "0-2" and fmt.seeds_text([0, 1]) == "0,1" and fmt.seeds_text([0, 4]) == "0,4"
    assert fmt.values_text({"lr": "1e-3", "tau": 0.5}) == "lr=1e-3, tau=0.5" and fmt.cell("a|b") == "a\\|b"


def test_the_table_writer() -> None:
    assert fmt.table(["a", "n"], [["x", 1]], style="compact", align="lr") == "| a | n |\n|---|---:|\n| x | 1 |"
    assert fmt.table(["a", "b"], [["0.50", "x"]]) == "| a    | b   |\n|------|-----|\n| 0.50 | x   |"
    assert fmt.table(["a"], [["1"]], style="plain").splitlines()[1].startswith("-")


def test_budget_helpers() -> None:
    assert make_budget(steps=None, default_steps=300) == {"steps": 300}
    assert make_budget(evals=10, lr_schedule="cosine") == {"evals": 10, "lr_schedule": "cosine"}
    assert budget_text({"steps": 2000}) == "steps=2000" and budget_text({}) == "no budget"
    assert budget_words({"steps": 10000, "lr_schedule": "cosine"}) == "10000 steps, lr_schedule cosine"
    with pytest.raises(UsageError, match="give one budget: --steps, --seconds or --evals, not --steps and --evals"):
        check_budget({"steps": 1, "evals": 2})
    with pytest.raises(UsageError, match="'steps' must be a whole number"):
        check_budget({"steps": 2.5}, name=repr)
    with pytest.raises(UsageError, match="needs a --steps or --evals budget"):
        make_budget(seconds=5.0, lr_schedule="cosine")


# ------------------------------------------------------------------------------------------ verdicts


def _side(label: str, values: list[float | None], higher: bool = True) -> Side:
    found = {s: Record(_record(seed=s, acc=v, status="ok" if v is not None else "diverged"))
             for s, v in enumerate(values)}
    return Side.of(label, label.lower(), found, Metric("acc", higher))


def test_a_statement_picks_its_rule_and_conclude_fills_the_verdict() -> None:
    """The verdicts' plumbing into gradbench.rules (whose rates tests/test_rules.py simulates): 8 paired seeds,
    the rules' minimum for a definitive verdict being 7."""
    assert [Statement(gain=25).kind, Statement(level=0.9).kind, Statement().kind] == ["gain", "level", "direction"]
    a = _side("A", [0.90, 0.91, 0.92, 0.93, 0.905, 0.915, 0.925, 0.91])
    b = _side("B", [0.70, 0.72, 0.71, 0.73, 0.705, 0.715, 0.72, 0.71])

    def one(v: Verdict) -> Verdict:
        (done,) = conclude_all([v])
        return done

    v = one(Verdict("c", Statement(gain=10), True, [a, b], {"steps": 100}, "quick"))
    assert v.outcome == SUPPORTED and v.paired_seeds == list(range(8)) and v.gain is not None and v.gain.lo > 0.1
    assert v.unpaired is not None and v.difference is not None and v.difference.diff == pytest.approx(0.200625)
    v = one(Verdict("c", Statement(), True, [b, a], {"steps": 100}, "quick"))
    assert v.outcome == CONTRADICTED
    v = one(Verdict("c", Statement(level=0.95), True, [a], {"steps": 100}, "quick"))
    assert v.outcome == NOT_SUPPORTED and v.gain is None
    failing = _side("A", [0.90, 0.91, None, 0.93, 0.905, 0.915, 0.925, 0.91])
    v = one(Verdict("c", Statement(gain=10), True, [failing, b], {"steps": 100}, "quick"))
    assert v.outcome == INCONCLUSIVE and any("A failed or diverged" in n for n in v.notes)
    missing = Side.of("A", "a", {0: Record(_record()), 1: None}, Metric("acc", True))
    assert one(Verdict("c", Statement(gain=10), True, [missing, b], {}, "quick")).outcome is None
    v = one(Verdict("c", Statement(gain=50, bound=1.0), True, [a, b], {"steps": 100}, "quick"))
    assert v.outcome == NOT_TESTABLE  # B at 0.714 leaves at most +40% below accuracy 1
