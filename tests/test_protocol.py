"""The fair protocol: common random numbers (data_fingerprint), validation metrics, and tuning on validation.

Tuning must never read the test split: ``test_poisoning_the_test_metric_leaves_the_choice_unchanged``
rewrites the records' test metrics to favour the losing setting and checks the choice stands.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import gradbench
from gradbench import leaderboard as lb
from gradbench import records
from gradbench.cli import main
from gradbench.errors import UsageError
from gradbench.registry import get_task_class
from gradbench.spec import RunOptions, resolve
from gradbench.sweep import Grid
from gradbench.task import valid_name
from gradbench.tune import (
    EXTEND_LIMIT,
    TIE_EXAMPLES,
    candidates,
    check_final_seeds,
    choose,
    next_value,
    parse_grid,
    score,
    tied,
    tune,
)

QUICK = {"device": "cpu", "grad_stats": False}


# ------------------------------------------------------------------------- common random numbers


def test_one_seed_gives_every_estimator_the_same_data(tmp_path):
    fingerprints = {}
    for est in ("ste", "dab", "gumbel", "reinforce"):
        r = gradbench.run("classify:node=bernoulli", est, seed=4, steps=3, runs=str(tmp_path), **QUICK)
        assert r["status"] == "ok", r["error"]
        fingerprints[est] = r["data_fingerprint"]
    assert len(set(fingerprints.values())) == 1, fingerprints
    other = gradbench.run("classify:node=bernoulli", "ste", seed=5, steps=3, runs=str(tmp_path), **QUICK)
    assert other["data_fingerprint"] != fingerprints["ste"]


def test_the_data_stream_ignores_what_the_estimator_draws():
    """Two tasks of one seed draw the same batches even when the global generator is used in between
    (as an estimator's noise would be): data comes from the task's own generator."""
    def batches(perturb: bool) -> list[torch.Tensor]:
        torch.manual_seed(11)
        spec = resolve("vae", "ste", seed=11)
        task = spec.task_cls(spec.task_config)
        out = []
        for _ in range(3):
            if perturb:
                torch.rand(1000)
            out.append(task.train_batch()[0])
        return out

    for a, b in zip(batches(False), batches(True), strict=True):
        assert torch.equal(a, b)


def test_fingerprint_and_fixed_batch_leave_the_data_stream_where_it_was():
    torch.manual_seed(2)
    spec = resolve("autoencode", "ste", seed=2)
    task = spec.task_cls(spec.task_config)
    state = task.data_generator.get_state()
    first = task.data_fingerprint()
    task.fixed_batch()
    assert torch.equal(task.data_generator.get_state(), state)
    assert task.data_fingerprint() == first


def test_batched_seeds_record_no_fingerprint(tmp_path):
    from gradbench.runner import execute_seeds

    specs = [resolve("toy", "ste", seed=s, steps=3, grad_stats=False) for s in (0, 1)]
    done = execute_seeds(specs, device="cpu", runs_dir=tmp_path, batch=True)
    assert [r["data_fingerprint"] for r in done] == [None, None]  # their data is drawn together: not theirs alone


# ------------------------------------------------------------------------------ validation metrics


@pytest.mark.parametrize("task", ["sort", "classify", "autoencode", "vae"])
def test_validation_metrics_are_recorded_beside_the_test_metrics(tmp_path, task):
    cls = get_task_class(task)
    assert cls.selection_metric() == valid_name(cls.main_metric)
    r = gradbench.run(task, "ste", steps=2, runs=str(tmp_path), **QUICK)
    assert r["status"] == "ok", r["error"]
    for metric in cls.test_metrics():
        if metric != "train_elbo":  # not a held-out metric
            assert valid_name(metric) in r["metrics"], metric
    text = (tmp_path / "leaderboard.md")
    lb.build(tmp_path, text)
    assert "valid_" not in text.read_text()  # tables report the test split only


def test_sort_validation_set_is_not_the_test_set():
    with pytest.raises(UsageError, match="valid_seed must differ"):
        resolve("sort:valid_seed=2024", "ste")
    spec = resolve("sort", "ste")
    task = spec.task_cls(spec.task_config)
    assert task.valid_x.shape == (10_000, 5) and not torch.equal(task.valid_x[:100], task.test_x[:100])


# ---------------------------------------------------------------------------------------- tuning


def test_parse_grid():
    assert parse_grid("lr=1e-4,3e-4,1e-3,tau=0.5,1") == {"lr": ["1e-4", "3e-4", "1e-3"], "tau": ["0.5", "1"]}
    for bad in ("", "1e-3,lr=2", "lr=", "lr=1,lr=2", "lr=1,1", "=3"):
        with pytest.raises(UsageError):
            parse_grid(bad)


def test_grid_keys_route_to_the_task_or_the_estimator():
    opts = RunOptions(steps=2, grad_stats=False)
    c = candidates("autoencode", "gumbel", {"tau": ["0.5", "1"]}, [0], "quick", opts)
    assert c.points == [{"tau": "0.5"}, {"tau": "1"}]
    for bad in ({"nope": ["1"]}, {"task.tau": ["1"]}, {"model.lr": ["1"]}):
        with pytest.raises(UsageError):
            candidates("classify", "ste", bad, [0], "quick", opts)
    with pytest.raises(UsageError, match="both in --task and in --grid"):
        candidates("classify:lr=0.01", "ste", {"lr": ["1e-3"]}, [0], "quick", opts)
    with pytest.raises(UsageError, match="no validation metric"):
        candidates("toy", "ste", {"lr": ["1e-3"]}, [0], "quick", opts)  # exact metrics, no data to hold out


def test_choose_rule():
    rows = [{"n_ok": 3, "n": 3, "n_valued": 3, "mean": 0.9}, {"n_ok": 2, "n": 3, "n_valued": 2, "mean": 0.99},
            {"n_ok": 3, "n": 3, "n_valued": 3, "mean": 0.9}, {"n_ok": 3, "n": 3, "n_valued": 3, "mean": 0.5}]
    assert choose(rows, higher_is_better=True) == 0  # row 1 lost a seed: not eligible; a tie goes to the earlier
    assert choose(rows, higher_is_better=False) == 3
    assert choose([{"n_ok": 1, "n": 2, "n_valued": 1, "mean": 1.0}], True) is None
    # the same hits out of the same examples, averaged in another order: a tie, not a win by one bit
    last_bit = [{"n_ok": 3, "n": 3, "n_valued": 3, "mean": m} for m in (0.9833333333333333, 0.9833333333333334)]
    assert choose(last_bit, higher_is_better=True) == 0


def _sweep_here(runs):
    from gradbench.sweep import LocalExecutor, run_sweep

    def sweep(grid: Grid):
        return run_sweep(grid, str(runs), LocalExecutor(1), device="cpu", progress=False)
    return sweep


@pytest.mark.slow
def test_poisoning_the_test_metric_leaves_the_choice_unchanged(tmp_path):
    opts = RunOptions(steps=60, grad_stats=False, runs=str(tmp_path), device="cpu")
    grid = "lr=1e-5,3e-3"
    result = tune("classify", "ste", grid, [0, 1], [2, 3, 4], "quick", opts, _sweep_here(tmp_path), extend=0)
    (sel,) = result.selections
    assert sel["choice"]["values"] == {"lr": "3e-3"}  # 1e-5 barely moves in 60 steps
    assert sel["selection_metric"] == "valid_accuracy" and len(sel["choice"]["final_run_ids"]) == 3
    saved = json.loads(Path(sel["path"]).read_text())
    assert saved["settings"][1]["mean"] > saved["settings"][0]["mean"]
    # poison: the losing setting gets a perfect test score, the chosen one a zero
    for i, row in enumerate(saved["settings"]):
        for rid in row["run_ids"]:
            path = records.record_path(tmp_path, "classify", "ste", rid)
            rec = json.loads(path.read_text())
            rec["metrics"]["accuracy"]["value"] = 1.0 if i == 0 else 0.0
            rec["metrics"]["test_loss"]["value"] = 0.0 if i == 0 else 9.0
            path.write_text(json.dumps(rec))
    again = tune("classify", "ste", grid, [0, 1], [2, 3, 4], "quick", opts, _sweep_here(tmp_path), extend=0)
    assert again.selections[0]["choice"] == sel["choice"]
    # and the leaderboard's tuned row is the chosen setting's, at the final seeds
    lb.build(tmp_path, tmp_path / "lb.md")
    text = (tmp_path / "lb.md").read_text()
    assert "### classify [tuned]" in text and "ste [lr=3e-3]" in text and "| 3/3 " in text
    assert "ste [lr=1e-5]" not in text and "### classify(lr=" not in text  # grid runs leave the plain tables
    from gradbench.plots import plot

    pngs = [p.name for p in plot(tmp_path)]
    assert pngs and all(name.startswith("classify_tuned_-quick-steps_60--") for name in pngs), pngs


def test_a_setting_that_fails_a_seed_is_not_eligible(tmp_path):
    opts = RunOptions(steps=5, grad_stats=False, runs=str(tmp_path), device="cpu")
    c = candidates("classify", "ste", {"lr": ["1e-3", "1e-2"]}, [0, 1], "quick", opts)
    for specs in c.specs:
        for s in specs:
            gradbench.runner.execute(s, device="cpu", runs_dir=tmp_path)
    bad = records.record_path(tmp_path, "classify", "ste", c.specs[1][1].run_id)
    rec = json.loads(bad.read_text())
    rec["status"], rec["error"] = "diverged", "non-finite loss"
    bad.write_text(json.dumps(rec))
    rows, missing = score(c, tmp_path)
    assert missing == 0 and rows[1]["n_ok"] == 1
    assert choose(rows, True) == 0


def test_selections_in_the_leaderboard_say_what_was_not_chosen(tmp_path):
    sel = {"kind": "selection", "task": {"name": "classify", "label": "classify"}, "preset": "quick",
           "budget": {"steps": 5}, "estimator": {"name": "ste", "label": "ste"}, "grid": {"lr": ["1", "2"]},
           "seeds": [0, 1], "final_seeds": [0, 1], "selection_metric": "valid_accuracy",
           "settings": [{"run_ids": ["aaa"]}, {"run_ids": ["bbb"]}], "choice": None}
    path = records.selection_path(tmp_path, "x")
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(sel))
    (tmp_path / "selections" / "broken.json").write_text("{")
    text, problems = lb.build(tmp_path, tmp_path / "lb.md")
    assert "ste: no setting finished on every tuning seed" in text
    assert any("broken.json" in p for p in problems)


def test_tune_cli_usage_errors(tmp_path, capsys):
    base = ["tune", "--task", "classify", "--estimators", "ste", "--runs", str(tmp_path), "--steps", "2"]
    assert main([*base, "--grid", "lr"]) == 2
    assert main([*base, "--grid", "lr=1e-3", "--seeds", "x"]) == 2
    assert main(["tune", "--task", "toy", "--estimators", "ste", "--grid", "lr=1e-3", "--runs", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert all(line.startswith("gradbench: error: ") for line in err.strip().splitlines())


@pytest.mark.slow
def test_tune_cli_end_to_end(tmp_path, capsys):
    rc = main(["tune", "--task", "classify", "--estimators", "ste,gumbel", "--grid", "lr=1e-3,3e-3", "--seeds", "0-1",
               "--final-seeds", "2-3", "--extend", "0", "--steps", "20", "--no-grad-stats", "--runs", str(tmp_path),
               "--device", "cpu", "--no-progress"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "skipping unsupported pair classify x gumbel" in err  # sign node
    assert "valid_accuracy ↑" in out and out.count("chosen") == 1
    assert len(list((tmp_path / "selections").glob("*.json"))) == 1


# -------------------------------------------------------------- tuning that cannot favour a side


def test_final_seeds_must_not_be_tuning_seeds(tmp_path, capsys):
    assert check_final_seeds([0, 1, 2], [3, 4]) == [3, 4]
    for final in ([2, 3], None):
        with pytest.raises(UsageError, match="final-seeds"):
            check_final_seeds([0, 1, 2], final)
    assert check_final_seeds([0, 1], None, allow_overlap=True) == [0, 1]
    assert check_final_seeds([0, 1], [1, 2], allow_overlap=True) == [1, 2]
    base = ["tune", "--task", "classify", "--estimators", "ste", "--grid", "lr=1e-3,3e-3", "--runs", str(tmp_path),
            "--steps", "2", "--seeds", "0-2"]
    for extra in (["--final-seeds", "2-4"], []):
        assert main([*base, *extra]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "disjoint" in err
    assert not list(tmp_path.glob("classify/*/*.json"))  # refused before any run


def _fake_sweep(runs, valid, metric="valid_accuracy", higher=True):
    """A sweep that writes a finished record for every run without one, its ``metric`` = ``valid(spec)``;
    returns the sweep and the list of runs it made."""
    made = []

    def sweep(grid: Grid):
        for spec in grid.specs:
            if spec.find_record(runs) is None:
                value = valid(spec)
                rec = {**spec.as_dict(), "run_id": spec.run_id, "schema_version": records.SCHEMA_VERSION,
                       "status": "ok", "error": None, "eval_every": spec.eval_every,
                       "metrics": {metric: {"value": value, "higher_is_better": higher}},
                       "main_metric": spec.task_cls.main_metric}
                path = spec.record_paths(runs)[0]
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(json.dumps(rec))
                made.append(spec)
    return sweep, made


def _lr(spec) -> float:
    return float(spec.task_config.lr)


def test_next_value_follows_the_grids_progression():
    assert next_value(["1e-3", "3e-3", "1e-2"], up=True) == "3e-2"
    assert next_value(["1e-3", "3e-3", "1e-2", "3e-2"], up=True) == "1e-1"
    assert next_value(["3e-4", "1e-3", "3e-3"], up=False) == "1e-4"
    assert next_value(["1e-3", "2e-3"], up=True) == "4e-3"  # no value of the grid's own near: the plain step
    assert next_value(["0.001", "0.01"], up=True) == "0.1"


def test_an_edge_choice_extends_the_grid_until_the_choice_is_interior(tmp_path):
    import math

    opts = RunOptions(steps=5, grad_stats=False, runs=str(tmp_path), device="cpu")
    # validation accuracy peaks at lr = 3e-2, beyond the stated grid's top (steps far above the tie resolution)
    sweep, made = _fake_sweep(tmp_path, lambda s: 0.9 - 0.1 * abs(math.log10(_lr(s) / 3e-2)))
    result = tune("classify", "ste", "lr=1e-3,3e-3,1e-2", [0, 1], [2, 3], "quick", opts, sweep)
    (sel,) = result.selections
    assert sel["choice"]["values"] == {"lr": "3e-2"}
    assert sel["grid"] == {"lr": ["1e-3", "3e-3", "1e-2"]}  # the stated grid (the id's) ...
    assert sel["tried"] == {"lr": ["1e-3", "3e-3", "1e-2", "3e-2", "1e-1"]}  # ... and every setting tried
    assert [(e["value"], e["direction"], e["chosen"]) for e in sel["extensions"]] == [
        ("3e-2", "up", "1e-2"), ("1e-1", "up", "3e-2")]
    assert sel["edge"] is False and sel["edges"] == {} and len(sel["settings"]) == 5
    assert sel["cost"]["runs"] == 10 and len(made) == 10 + 2  # five settings at two seeds, and the finals
    # resumed: the extensions are re-derived from the records, nothing is run again
    again = tune("classify", "ste", "lr=1e-3,3e-3,1e-2", [0, 1], [2, 3], "quick", opts, sweep)
    assert len(made) == 12 and again.selections[0]["choice"] == sel["choice"]


def test_extension_stops_at_the_limit_and_flags_the_edge(tmp_path, capsys):
    import math

    from gradbench.report import format_selection
    from gradbench.results import Selection

    opts = RunOptions(steps=5, grad_stats=False, runs=str(tmp_path), device="cpu")
    sweep, made = _fake_sweep(tmp_path, lambda s: 1 + 0.1 * math.log10(_lr(s)))  # the larger lr, the better
    (sel,) = tune("classify", "ste", "lr=1e-3,3e-3,1e-2", [0, 1], [2, 3], "quick", opts, sweep).selections
    assert EXTEND_LIMIT == 2 and sel["tried"]["lr"] == ["1e-3", "3e-3", "1e-2", "3e-2", "1e-1"]
    assert sel["choice"]["values"] == {"lr": "1e-1"}
    assert sel["edge"] is True and sel["edges"] == {"lr": {"side": "high", "why": "limit"}}
    view = Selection(sel)
    assert view.edge and view.edge_text.startswith("lr=1e-1 is the largest value tried")
    text = format_selection(sel)
    assert "EDGE: lr=1e-1" in text and "grid extended past an edge choice: lr=3e-2 (up), lr=1e-1 (up)" in text
    # downwards likewise; with extensions off, the edge is flagged at once
    sweep, _ = _fake_sweep(tmp_path / "down", lambda s: -0.1 * math.log10(_lr(s)))
    down = RunOptions(steps=5, grad_stats=False, runs=str(tmp_path / "down"), device="cpu")
    (sel,) = tune("classify", "ste", "lr=1e-3,3e-3,1e-2", [0], [1], "quick", down, sweep).selections
    assert sel["tried"]["lr"] == ["1e-4", "3e-4", "1e-3", "3e-3", "1e-2"] and sel["choice"]["values"] == {"lr": "1e-4"}
    (sel,) = tune("classify", "ste", "lr=1e-3,3e-3,1e-2", [0], [1], "quick", down, sweep, extend=0).selections
    assert sel["tried"] == sel["grid"] and sel["edges"] == {"lr": {"side": "low", "why": "limit"}}


def test_extension_stays_in_range_and_only_learning_rates_extend(tmp_path):
    opts = RunOptions(steps=5, grad_stats=False, runs=str(tmp_path), device="cpu")
    sweep, made = _fake_sweep(tmp_path, lambda s: _lr(s))
    (sel,) = tune("classify", "ste", "lr=1e-1,3e-1,1", [0], [1], "quick", opts, sweep).selections
    assert sel["tried"] == sel["grid"] and sel["edges"] == {"lr": {"side": "high", "why": "range"}}  # 3 > 1
    sweep, _ = _fake_sweep(tmp_path, lambda s: float(s.estimator_config.tau))
    (sel,) = tune("classify:node=bernoulli", "gumbel", "tau=0.5,1", [0], [1], "quick", opts, sweep).selections
    assert sel["tried"] == sel["grid"] and sel["edges"] == {"tau": {"side": "high", "why": "fixed"}}
    assert "only learning rates" in sel["rule"] or "learning rate" in sel["rule"]


def test_the_tie_rule_is_stated_in_validation_examples():
    n, seeds = 180, 3  # digits' validation split, three tuning seeds: a mean moves in steps of 1/540

    def rows(*hits):
        return [{"n_ok": 3, "n": 3, "n_valued": 3, "mean": h / (n * seeds)} for h in hits]

    res = TIE_EXAMPLES / n
    middle = [1.0, 0.0, 1.0]
    # 532 against 527 and 530 hits: 5 and 2 images over 3 seeds, fewer than 2 per seed: all tied, middle wins
    assert tied(rows(530, 527, 532), True, res) == [0, 1, 2]
    assert choose(rows(530, 527, 532), True, res, middle) == 1
    assert choose(rows(530, 527, 532), True) == 2  # without the resolution the larger mean wins
    # exactly 2 images per seed (6 over 3 seeds) is not a tie
    assert tied(rows(520, 526, 532), True, res) == [2] and choose(rows(520, 526, 532), True, res, middle) == 2
    # lower is better alike; equidistant from the middle: the better mean, then the earlier
    assert choose(rows(530, 527, 529), False, res, middle) == 1
    assert choose(rows(531, 532, 530), True, res, [0.5, 0.5, 1.5]) == 1

    opts = RunOptions(steps=5, grad_stats=False)
    classify = candidates("classify", "ste", {"lr": ["1e-3", "3e-3"]}, [0], "quick", opts)
    assert classify.validation_size == 180 and classify.resolution == pytest.approx(2 / 180)
    recon = candidates("autoencode", "ste", {"lr": ["1e-3", "3e-3"]}, [0], "quick", opts)
    assert recon.metric == "valid_recon" and recon.resolution == 0.0  # a loss: no resolution in images
    probe = candidates("autoencode", "ste", {"lr": ["1e-3", "3e-3"]}, [0], "quick", opts, metric="probe_accuracy")
    assert probe.metric == "valid_probe_accuracy" and probe.resolution == pytest.approx(2 / 180)
    sort = candidates("sort", "ste", {"lr": ["1e-3", "3e-3"]}, [0], "quick", opts)
    assert sort.validation_size == 10_000 and sort.resolution == pytest.approx(2e-4)
    with pytest.raises(UsageError, match="no validation metric 'valid_loss'"):
        candidates("autoencode", "ste", {"lr": ["1e-3"]}, [0], "quick", opts, metric="loss")


def test_tune_chooses_on_the_metric_asked_for(tmp_path):
    opts = RunOptions(steps=5, grad_stats=False, runs=str(tmp_path), device="cpu")
    probe = {"3e-4": 0.6, "1e-3": 0.8, "3e-3": 0.7}
    sweep, _ = _fake_sweep(tmp_path, lambda s: probe[f"{_lr(s):.0e}".replace("e-0", "e-")],
                           metric="valid_probe_accuracy")
    (sel,) = tune("autoencode", "dab", "lr=3e-4,1e-3,3e-3", [0], [1], "quick", opts, sweep,
                  metric="probe_accuracy").selections
    assert sel["selection_metric"] == "valid_probe_accuracy" and sel["choice"]["values"] == {"lr": "1e-3"}
    assert sel["validation_size"] == 180 and sel["resolution"] == pytest.approx(2 / 180)
    default = candidates("autoencode", "dab", {"lr": ["3e-4", "1e-3", "3e-3"]}, [0], "quick", opts)
    assert sel["id"] != default.selection_id([1])  # a tuning on another metric is another selection


def test_committed_selection_records_still_load():
    from gradbench.report import format_selection
    from gradbench.results import Selection

    root = Path(__file__).resolve().parents[1] / "results" / "selections"
    paths = sorted(root.glob("*.json"))
    assert paths
    made_after = 0
    for path in paths:
        data = json.loads(path.read_text())
        sel = Selection({**data, "path": str(path)})
        assert isinstance(sel.edge, bool) and (sel.edge_text != "") == sel.edge
        assert sel.overlap == sorted(set(sel.seeds) & set(sel.final_seeds))
        assert sel.label in format_selection(sel)
        if "tried" not in data:  # made before grids extended themselves
            assert sel.tried == sel.grid and sel.extensions == []
            assert sel.validation_size is None and sel.resolution == 0.0 and sel.tied == []
        else:  # made under the rules of issue 22 (the studies): disjoint seeds, the grid given among those tried
            made_after += 1
            assert sel.overlap == [] and all(set(v) <= set(sel.tried[k]) for k, v in sel.grid.items())
    assert made_after > 0  # the committed studies' tunings
    # issue 22's checks on the committed records: every selection reports at seeds it was not tuned on, and a
    # learning rate chosen at an end of the grid tried is flagged as an edge choice
    at_edge = 0
    for path in paths:
        data = json.loads(path.read_text())
        sel = Selection(data)
        assert sel.overlap == [] and not set(sel.seeds) & set(sel.final_seeds), path.name
        tried = [float(v) for v in data.get("tried", data["grid"]).get("lr", [])]
        chosen = (data.get("choice") or {}).get("values", {}).get("lr")
        if tried and chosen is not None and float(chosen) in (min(tried), max(tried)):
            at_edge += 1
            assert sel.edge and sel.edge_text, path.name
    assert at_edge == sum(Selection(json.loads(p.read_text())).edge for p in paths)
