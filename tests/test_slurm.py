"""--backend slurm: sweeps through submitit, tested with submitit's local executor (``--slurm cluster=local``:
each job a local subprocess, through the same pickles, result files and polling as on Slurm). In CI (CI set)
submitit must be installed: these tests fail there instead of skipping."""

from __future__ import annotations

import importlib
import math
import os
import time

import pytest

from gradbench import records
from gradbench.cli import main
from gradbench.errors import UsageError
from gradbench.sweep import SLURM_DEFAULTS, JobFailed, SlurmExecutor, slurm_parameters


def need_submitit():
    if os.environ.get("CI"):
        return importlib.import_module("submitit")
    return pytest.importorskip("submitit", reason="the slurm extra is not installed: pip install 'gradbench[slurm]'")


def test_slurm_options_become_submitit_parameters():
    cluster, params = slurm_parameters("account=proj,qos=high,mem_gb=16,slurm_constraint=a100,time=1:00:00,"
                                       "cpus_per_task=2", partition="gpu", cpus_per_task=8, gpus_per_node=1)
    assert cluster == "slurm"
    assert params == {**SLURM_DEFAULTS, "name": "gradbench", "slurm_account": "proj", "slurm_qos": "high",
                      "mem_gb": 16, "slurm_constraint": "a100", "slurm_time": "1:00:00", "cpus_per_task": 8,
                      "slurm_partition": "gpu", "gpus_per_node": 1}  # the flags win over --slurm
    assert slurm_parameters("cluster=local", time_min=5) == ("local", {**SLURM_DEFAULTS, "name": "gradbench",
                                                                      "timeout_min": 5})
    for bad in ("partition", "cluster=pbs"):
        with pytest.raises(UsageError):
            slurm_parameters(bad)


def test_slurm_without_sbatch_or_with_bad_parameters_is_a_usage_error(tmp_path, monkeypatch, capsys):
    need_submitit()
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch here
    argv = ["sweep", "--tasks", "toy", "--estimators", "ste", "--steps", "20", "--runs", str(tmp_path / "runs"),
            "--backend", "slurm", "--no-progress"]
    assert main(argv) == 2
    assert "no sbatch" in capsys.readouterr().err
    assert main([*argv, "--slurm", "cluster=local,frobnicate=3"]) == 2
    assert "bad --slurm parameters" in capsys.readouterr().err
    assert not list((tmp_path / "runs").glob("*/*/*.json"))


def test_slurm_executor_futures_results_failures_and_cancel(tmp_path):
    """Jobs become concurrent.futures Futures (a job's exception comes back as JobFailed naming its log);
    at most ``workers`` jobs are out at once; cancel stops the queued and running ones."""
    need_submitit()
    import concurrent.futures as cf

    ex = SlurmExecutor(tmp_path / "slurm", workers=1, params={"timeout_min": 5}, cluster="local")
    good, bad = ex.submit(math.sqrt, 4.0), ex.submit(math.sqrt, -1.0)
    assert len(ex.running) == 1 and len(ex.waiting) == 1  # one at a time
    done = list(cf.as_completed([good, bad], timeout=120))
    assert len(done) == 2 and good.result() == 2.0
    assert isinstance(bad.exception(), JobFailed) and "math domain error" in str(bad.exception())
    assert "_log.err" in str(bad.exception())
    ex.shutdown()
    assert sorted(p.name for p in (tmp_path / "slurm").glob("*_result.pkl"))  # the job files live there

    ex = SlurmExecutor(tmp_path / "slurm2", workers=1, cluster="local")
    first, second = ex.submit(time.sleep, 60), ex.submit(time.sleep, 60)
    job = ex.running[0][0]
    t0 = time.perf_counter()
    ex.shutdown(cancel=True)
    assert first.cancelled() and second.cancelled()
    while not job.done() and time.perf_counter() - t0 < 30:
        time.sleep(0.2)
    assert job.done() and time.perf_counter() - t0 < 30  # the running job was stopped, not waited for


def test_slurm_sweep_end_to_end_logs_and_resumes(tmp_path, capsys):
    """A toy grid through --backend slurm (local cluster): ok records, job logs under <runs>/slurm,
    the --log option reaching the jobs; a second sweep finds everything finished and submits nothing."""
    need_submitit()
    need_tb = os.environ.get("CI") or importlib.util.find_spec("tensorboard") is not None
    runs = tmp_path / "runs"
    argv = ["sweep", "--tasks", "toy", "--estimators", "reinforce,ste", "--seeds", "0", "--steps", "20",
            "--no-grad-stats", "--backend", "slurm", "--slurm", "cluster=local", "--slurm-time", "10",
            "--workers", "2", "--runs", str(runs), "--no-progress", *(["--log", "tensorboard"] if need_tb else [])]
    assert main(argv) == 0, capsys.readouterr().err[-2000:]
    out = capsys.readouterr().out
    assert "0 already finished, 2 ok, 0 failed" in out
    recs = [records.read_record(p) for p in runs.glob("*/*/*.json")]
    assert sorted(r["estimator"]["name"] for r in recs) == ["reinforce", "ste"]
    assert all(r["status"] == "ok" and r["provenance"]["threads"] == 1 for r in recs)
    assert all(r["provenance"]["threads_source"] == "slurm: the job's cpus_per_task"
               or r["provenance"]["threads_source"] == "OMP_NUM_THREADS" for r in recs)
    jobs = sorted(p.name for p in (runs / "slurm").glob("*_log.out"))
    assert len(jobs) == 2
    if need_tb:
        assert sorted(p.name for p in (runs / "tensorboard").iterdir()) == sorted(r["run_id"] for r in recs)
    assert main(argv) == 0
    assert "2 already finished, 0 ok, 0 failed" in capsys.readouterr().out
    assert sorted(p.name for p in (runs / "slurm").glob("*_log.out")) == jobs  # nothing submitted again
