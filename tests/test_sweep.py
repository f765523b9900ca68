"""Sweeps: grid expansion, sharding, resume after SIGKILL, corrupt records, concurrent sweeps, Ray,
show/rerun. The process tests run the real CLI in subprocesses (no mocks)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gradbench import records
from gradbench.cli import main
from gradbench.errors import UsageError
from gradbench.sweep import expand, in_shard, parse_seeds, parse_shard, split_specs

GB = [sys.executable, "-m", "gradbench.cli"]


def test_split_specs_keeps_settings_with_their_estimator():
    assert split_specs("dab,gumbel:tau=0.5,hard=true,ste") == ["dab", "gumbel:tau=0.5,hard=true", "ste"]


def test_seeds_and_shards_parse_or_fail_clearly():
    assert parse_seeds("0-2,5") == [0, 1, 2, 5]
    for bad in ("x", "-1", ""):
        with pytest.raises(UsageError):
            parse_seeds(bad)
    assert parse_shard("1/3") == (1, 3)
    for bad in ("3/3", "1/0", "a/b", "2"):
        with pytest.raises(UsageError):
            parse_shard(bad)


def test_grid_lists_unsupported_pairs_and_shards_cover_it_exactly_once():
    grid = expand("toy,sort", "reinforce,ste,gumbel", [0, 1, 2, 3], steps=10)
    assert len(grid.specs) == (3 + 1) * 4  # sort's sign node: only ste
    assert len(grid.unsupported) == 2 and all("sort x" in u for u in grid.unsupported)
    ids = [s.run_id for s in grid.specs]
    assert len(set(ids)) == len(ids)
    shards = [{i for i in ids if in_shard(i, (k, 3))} for k in range(3)]
    assert set().union(*shards) == set(ids)
    assert sum(len(s) for s in shards) == len(ids)


def _ok_records(runs: Path) -> list[dict]:
    out = []
    for path in runs.glob("*/*/*.json"):
        out.append(records.read_record(path))
    return out


SWEEP = ["sweep", "--tasks", "toy", "--estimators", "reinforce,ste,gumbel", "--seeds", "0-3", "--workers", "2",
         "--steps", "1500", "--no-progress"]


def test_sigkill_then_resume_completes_exactly_the_missing_runs(tmp_path):
    runs, out = tmp_path / "runs", tmp_path / "lb.md"
    args = GB + SWEEP + ["--runs", str(runs), "--out", str(out)]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 120
    while len(list(runs.glob("*/*/*.json"))) < 2 and time.time() < deadline:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # the sweep and its workers, as a crash or `kill -9` would
    proc.wait()
    done = sorted(runs.glob("*/*/*.json"))
    assert 2 <= len(done) < 12, len(done)
    done[0].write_text(done[0].read_text()[: len(done[0].read_text()) // 2])  # a record truncated by hand
    again = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert "corrupt" in again.stderr
    recs = _ok_records(runs)
    assert len(recs) == 12 and len({r["run_id"] for r in recs}) == 12
    assert all(r["status"] == "ok" for r in recs)
    assert "| reinforce" in out.read_text()
    # what the killed runs were writing stays in hidden ".<name>.<pid>.tmp" files, never under a record's name
    assert not [p for p in runs.glob("*/*/*") if p.name.endswith(".tmp") and not p.name.startswith(".")]
    assert len(list(runs.glob("*/*/*.history.jsonl"))) == 12


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc to find the worker processes")
def test_workers_stop_when_the_sweep_process_alone_is_killed(tmp_path):
    runs = tmp_path / "runs"
    proc = subprocess.Popen(GB + SWEEP + ["--runs", str(runs), "--out", str(tmp_path / "lb.md")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while len(_children(proc.pid)) < 2 and time.time() < deadline:
        time.sleep(0.2)
    workers = _children(proc.pid)
    assert workers
    time.sleep(2)
    proc.kill()  # SIGKILL to the main process only: its workers are orphaned
    proc.wait()
    deadline = time.time() + 10
    while any(Path(f"/proc/{w}").exists() for w in workers) and time.time() < deadline:
        time.sleep(0.2)
    alive = [w for w in workers if Path(f"/proc/{w}").exists()
             and Path(f"/proc/{w}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"]
    assert not alive  # no orphan goes on computing runs nobody is waiting for


def test_two_sweeps_on_one_folder_never_corrupt_or_duplicate(tmp_path):
    runs = tmp_path / "runs"
    args = GB + ["sweep", "--tasks", "toy", "--estimators", "reinforce,ste", "--seeds", "0-1", "--steps", "300",
                 "--no-progress", "--runs", str(runs), "--out", str(tmp_path / "lb.md")]
    procs = [subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for p in procs:
        p.communicate(timeout=300)
        assert p.returncode == 0
    recs = _ok_records(runs)
    assert len(recs) == 4 and len({r["run_id"] for r in recs}) == 4
    for hist in runs.glob("*/*/*.history.jsonl"):
        rows = [json.loads(line) for line in hist.read_text().splitlines()]
        steps = [r["step"] for r in rows if "step" in r]
        assert steps == sorted(steps)  # one writer's lines, in order


def test_failed_run_gives_exit_1_and_the_sweep_goes_on(tmp_path, capsys):
    plugin = tmp_path / "boom.py"
    plugin.write_text(
        "import gradbench\nfrom dataclasses import dataclass\n\n@dataclass(frozen=True)\nclass C:\n    pass\n\n"
        "@gradbench.register_estimator('sweep_boom')\nclass R(gradbench.Estimator):\n"
        "    supports = frozenset({'bernoulli'})\n    Config = C\n\n"
        "    def forward(self, logits, cost_fn):\n        raise RuntimeError('kaboom')\n")
    runs = tmp_path / "runs"
    code = main(["sweep", "--tasks", "toy", "--estimators", "ste,sweep_boom", "--seeds", "0", "--steps", "50",
                 "--plugin", str(plugin), "--runs", str(runs), "--out", str(tmp_path / "lb.md"), "--no-progress",
                 "--workers", "2"])
    assert code == 1
    statuses = sorted(r["status"] for r in _ok_records(runs))
    assert statuses == ["failed", "ok"]
    assert "kaboom" in capsys.readouterr().err


def test_ctrl_c_exits_130_leaving_only_complete_records(tmp_path):
    runs = tmp_path / "runs"
    args = GB + SWEEP + ["--runs", str(runs), "--out", str(tmp_path / "lb.md")]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.time() + 120
    while not list(runs.glob("*/*/*.json")) and time.time() < deadline:
        time.sleep(0.2)
    while not list(runs.glob("*/*/.*.tmp")) and time.time() < deadline:  # a run is in flight
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C reaches the whole foreground process group
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130
    for path in runs.glob("*/*/*.json"):
        assert records.read_record(path)["status"] == "ok"
    # the runs in flight leave nothing behind: no half-written history, no leaked semaphore (tqdm's lock)
    assert list(runs.rglob("*.tmp")) == []
    assert "leaked semaphore" not in err.decode() and "Traceback" not in err.decode()


def test_show_and_rerun_reproduce_a_run_from_its_record(tmp_path, capsys):
    runs = str(tmp_path / "runs")
    assert main(["run", "-t", "toy:dim=20", "-e", "relax:variant=rebar", "--steps", "100", "--seed", "3",
                 "--runs", runs, "--json", "--no-progress"]) == 0
    original = json.loads(capsys.readouterr().out)
    assert main(["show", original["run_id"], "--runs", runs]) == 0
    assert original["run_id"] in capsys.readouterr().out
    assert main(["rerun", original["run_id"], "--runs", runs, "--into", str(tmp_path / "again"),
                 "--device", "cpu"]) == 0
    assert "identical to the original" in capsys.readouterr().out
    again = records.read_record(records.record_path(tmp_path / "again", "toy", "relax", original["run_id"]))
    assert again["metrics"] == original["metrics"]
    assert main(["show", "nope", "--runs", runs]) == 2


@pytest.mark.slow
def test_ray_backend_runs_the_grid(tmp_path):
    pytest.importorskip("ray", reason="the ray extra is not installed")
    runs = tmp_path / "runs"
    proc = subprocess.run(GB + ["sweep", "--tasks", "toy", "--estimators", "reinforce,ste", "--seeds", "0-1",
                                "--steps", "200", "--backend", "ray", "--workers", "2", "--no-progress",
                                "--runs", str(runs), "--out", str(tmp_path / "lb.md")],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    recs = _ok_records(runs)
    assert len(recs) == 4 and all(r["status"] == "ok" for r in recs)


def test_batch_seeds_sweep_trains_each_batch_in_one_worker_and_resumes(tmp_path, capsys):
    """--batch-seeds: gumbel's seeds are one batch (records name it), relax's run one by one (not
    batchable); a batch never straddles shards; a second sweep finds everything finished."""
    from gradbench.sweep import group_key

    grid = expand("toy", "gumbel,relax", [0, 1, 2], batch_seeds=True, steps=60)
    keys = {s.estimator_cls.name: {group_key(x) for x in grid.specs if x.estimator_cls is s.estimator_cls}
            for s in grid.specs}
    assert len(keys["gumbel"]) == 1 and len(keys["relax"]) == 3
    runs = tmp_path / "runs"
    args = ["sweep", "--tasks", "toy", "--estimators", "gumbel,relax", "--seeds", "0-2", "--steps", "60",
            "--batch-seeds", "--workers", "2", "--no-grad-stats", "--no-progress", "--runs", str(runs),
            "--out", str(tmp_path / "lb.md")]
    assert main(args) == 0
    recs = _ok_records(runs)
    assert sorted((r["estimator"]["name"], r["seed"], tuple(r.get("seed_batch") or ())) for r in recs) == [
        ("gumbel", s, (0, 1, 2)) for s in range(3)] + [("relax", s, ()) for s in range(3)]
    assert all(r["status"] == "ok" for r in recs)
    capsys.readouterr()
    assert main(args) == 0
    assert "6 already finished" in capsys.readouterr().out
