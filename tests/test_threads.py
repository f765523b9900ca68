"""The thread policy (gradbench.threads) and the rerun check (gradbench.reproduce).

The policy's speed targets are measured by benchmarks/threads.py (ratios side by side), not here: these
tests check the rule, that runs record and restore it, and that sweeps pass it to their workers.
"""

from __future__ import annotations

import copy
import json

import pytest
import torch
from helpers import run_toy

from gradbench import reproduce, threads
from gradbench.cli import main
from gradbench.errors import UsageError


@pytest.fixture
def no_omp(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)


def test_the_rule_explicit_then_auto_then_environment_then_one_per_process(monkeypatch, no_omp):
    assert threads.choose(3) == threads.ThreadChoice(3, "--threads")
    assert threads.choose(None).threads == 1 and threads.choose(None).source == "default: one per process"
    assert threads.choose(None, workers=4).source == "default: one per worker"
    auto = threads.choose("auto", workers=1)
    assert auto.threads is None and auto.probe_up_to == threads.cores()
    assert threads.choose("auto", workers=10_000).probe_up_to == 1  # never less than one each
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert threads.choose(None) == threads.ThreadChoice(2, "OMP_NUM_THREADS")
    assert threads.choose(5).threads == 5  # the flag wins over the environment
    monkeypatch.setenv("OMP_NUM_THREADS", "many")
    with pytest.raises(UsageError, match="OMP_NUM_THREADS='many'"):
        threads.choose(None)


@pytest.mark.parametrize("bad", ["0", "-2", "two", "1.5"])
def test_bad_thread_counts_are_usage_errors(bad, capsys):
    with pytest.raises(UsageError, match="--threads takes a positive whole number or 'auto'"):
        threads.parse(bad)
    assert main(["run", "-t", "toy", "--threads", bad, "--steps", "1"]) == 2
    assert "--threads" in capsys.readouterr().err


def test_a_run_records_its_threads_and_restores_the_callers(tmp_path, no_omp):
    before = torch.get_num_threads()
    record = run_toy(tmp_path, threads=2, grad_stats=False)
    prov = record["provenance"]
    assert (prov["threads"], prov["threads_source"]) == (2, "--threads")
    assert prov["cpu_model"] and isinstance(prov["cpu_model"], str)
    assert torch.get_num_threads() == before
    default = run_toy(tmp_path / "default", grad_stats=False)
    assert (default["provenance"]["threads"], default["provenance"]["threads_source"]) == (
        1, "default: one per process")
    assert default["metrics"] == record["metrics"]  # the toy's kernels are too small to split: same floats


def test_auto_probes_and_records_its_timings(tmp_path, no_omp):
    record = run_toy(tmp_path, threads="auto", grad_stats=False)
    prov = record["provenance"]
    assert prov["threads"] in range(1, threads.cores() + 1)
    assert prov["threads_source"].startswith("auto")
    assert "1" in prov["threads_probe_seconds"] and all(v > 0 for v in prov["threads_probe_seconds"].values())


def test_the_probe_prefers_fewer_threads_unless_more_are_clearly_faster(monkeypatch):
    seen = []

    def fast_with_more():  # pretend work whose time halves with each doubling of threads
        seen.append(torch.get_num_threads())

    clock = iter([])
    monkeypatch.setattr(threads.time, "perf_counter", lambda: next(clock))
    # 1 thread: 1.0 s, 2 threads: 0.9 s (not 15% faster) -> 1; then 0.5 s -> 2
    for t2, expected in [(0.9, 1), (0.5, 2)]:
        clock = iter([0.0, 1.0] * 3 + [0.0, t2] * 3)
        chosen, timing = threads.probe(fast_with_more, up_to=2)
        assert chosen == expected and timing == {1: 1.0, 2: t2}
    assert set(seen) == {1, 2}


def test_sweep_workers_run_with_one_thread_each_and_record_it(tmp_path, no_omp, capsys):
    runs = tmp_path / "runs"
    assert main(["sweep", "--tasks", "toy", "--estimators", "reinforce", "--seeds", "0-1", "--steps", "20",
                 "--no-grad-stats", "--workers", "2", "--no-progress", "--runs", str(runs)]) == 0
    recs = [json.loads(p.read_text()) for p in runs.glob("*/*/*.json")]
    assert len(recs) == 2
    assert {(r["provenance"]["threads"], r["provenance"]["threads_source"]) for r in recs} == {
        (1, "default: one per worker")}
    assert main(["sweep", "--tasks", "toy", "--estimators", "ste", "--steps", "20", "--no-grad-stats",
                 "--workers", "1", "--threads", "2", "--no-progress", "--runs", str(runs)]) == 0
    (ste,) = [json.loads(p.read_text()) for p in runs.glob("toy/ste/*.json")]
    assert ste["provenance"]["threads"] == 2


# ------------------------------------------------------------------------- rerun


def _record(values: dict[str, float], **prov) -> dict:
    base = {"cpu_model": "AMD EPYC", "device_name": "cpu", "torch": "2.13.0+cpu", "threads": 1,
            "gradbench_version": "0.1.0", "git_sha": "abc", "git_dirty": False}
    return {"metrics": {k: {"value": v, "higher_is_better": True} for k, v in values.items()},
            "provenance": {**base, **prov}}


def test_rerun_check_fails_only_on_the_same_machine():
    original = _record({"acc": 0.934, "loss": 0.25})
    same = reproduce.check(original, copy.deepcopy(original))
    assert same.reproduced and not same.failed and "identical" in same.message()
    drifted = reproduce.check(original, _record({"acc": 0.9422, "loss": 0.25}))
    assert drifted.failed and drifted.worst == "acc" and drifted.max_rel_diff == pytest.approx(0.0082 / 0.9422)
    assert "NOT reproduced" in drifted.message() and "8.70e-03" in drifted.message()
    elsewhere = reproduce.check(original, _record({"acc": 0.9422, "loss": 0.25}, cpu_model="Intel Xeon"))
    assert not elsewhere.failed and "the machine differs (cpu_model 'AMD EPYC' -> 'Intel Xeon')" in elsewhere.message()
    old = copy.deepcopy(original)
    del old["provenance"]["cpu_model"]  # records made before the CPU model was recorded
    assert not reproduce.check(old, _record({"acc": 0.9422, "loss": 0.25})).same_machine
    tiny = reproduce.check(original, _record({"acc": 0.934 * (1 + 5e-7), "loss": 0.25}))
    assert tiny.reproduced and not tiny.failed  # within the stated tolerance
    code = reproduce.check(original, _record({"acc": 0.934, "loss": 0.25}, git_sha="def"))
    assert "the code differs (git_sha 'abc' -> 'def')" in code.message()
    missing = reproduce.check(original, _record({"acc": 0.934}))
    assert missing.failed and "a metric is missing" in missing.message()


def test_rerun_exits_1_when_a_record_does_not_reproduce_on_this_machine(tmp_path, capsys, no_omp):
    runs = tmp_path / "runs"
    record = run_toy(runs, grad_stats=False)
    path = next(runs.glob("toy/reinforce/*.json"))
    assert main(["rerun", record["run_id"], "--runs", str(runs), "--into", str(tmp_path / "a")]) == 0
    assert "identical to the original record; same machine" in capsys.readouterr().out
    tampered = json.loads(path.read_text())
    tampered["metrics"]["expected_cost"]["value"] *= 1.01
    path.write_text(json.dumps(tampered))
    assert main(["rerun", record["run_id"], "--runs", str(runs), "--into", str(tmp_path / "b")]) == 1
    assert "NOT reproduced" in capsys.readouterr().out


# ------------------------------------------------------------------------- progress


def test_the_bar_names_its_phases_and_ends_on_the_final_evaluation(tmp_path, capsys):
    """The sampled reference gradient (sort:node=bernoulli has no exact one), the estimator's draws and each
    evaluation show as named phases with their own counts; the last figure the bar shows is the run's final
    metric (it was one evaluation behind)."""
    record = run_toy(tmp_path, task="sort:node=bernoulli", estimator="gumbel", steps=40, eval_every=20,
                     grad_draws=4, grad_checkpoints=(0.0,), progress=True)
    err = capsys.readouterr().err.replace("\r", "\n")
    for phase in ("[training]", "gradient statistics (start): reference gradient", "/128",
                  "gradient statistics (start): gradient draws", "[evaluation]", "variance trace"):
        assert phase in err, phase
    shown = [line.split("all_or_none=")[1].split("]")[0] for line in err.splitlines() if "all_or_none=" in line]
    assert shown[-1] == f"{record['metrics']['all_or_none']['value']:.4g}"
    assert len(set(shown)) >= 2  # it moved: a figure per evaluation, not one stale value
