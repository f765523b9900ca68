"""Command line: ``gradbench run | sweep | tune | study | list | describe | validate | show | rerun | plot | compare |
leaderboard | export | report | data``. A thin layer over the Python API; the readable output lives in
``gradbench.report``.

Progress goes to stderr, results to stdout (``--json`` for machines). Exit codes: 0 ok, 1 a run or
check failed, 2 usage error (unknown name, bad config, unsupported pair), 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gradbench import configfile
from gradbench.errors import UsageError
from gradbench.registry import ESTIMATORS, TASKS, load_plugin

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors in one line (exit 2) instead of usage + message."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{message} (see '{self.prog} --help')")


# ----------------------------------------------------------------------------------- parsers


def _common() -> argparse.ArgumentParser:
    """Options every subcommand takes."""
    p = _Parser(add_help=False)
    p.add_argument("--plugin", action="append", default=[], metavar="FILE.py|module",
                   help="import a file or module that registers estimators/tasks (repeatable)")
    p.add_argument("--traceback", action="store_true",
                   help="print the full traceback of a plugin that fails to import or of a failed run")
    return p


def _config_file() -> argparse.ArgumentParser:
    """``--config FILE.toml`` (run, sweep, tune): the command's options from a file (gradbench.configfile)."""
    p = _Parser(add_help=False)
    p.add_argument("--config", metavar="FILE.toml", help="read options from a TOML file whose keys are the long "
                   "flags (steps = 1000, estimator = \"dab:gamma=5\"); flags on the command line override it")
    return p


def _runs(help_text: str = "records folder (default: ./runs)") -> argparse.ArgumentParser:
    p = _Parser(add_help=False)
    p.add_argument("--runs", default="runs", help=help_text)
    return p


def _training() -> argparse.ArgumentParser:
    """The run options shared by every subcommand that trains (gradbench.spec.RunOptions)."""
    p = _Parser(add_help=False)
    p.add_argument("--preset", default="quick", help="task preset: quick (CPU, ~1 min) or paper (default: quick)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default: auto)")
    p.add_argument("--accel", default="auto", help="auto | none | graph | compile: how steps execute (default: "
                   "auto = graph on CUDA, eager on CPU); graph = the whole step captured in a CUDA graph, "
                   "compile = torch.compile of each step's forward")
    p.add_argument("--threads", type=_threads, help="torch threads per run: N, or auto (a short probe picks); "
                   "default: OMP_NUM_THREADS if set, else 1 per process (see docs/performance.md)")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--steps", type=int, help="training steps (default: the preset's)")
    budget.add_argument("--seconds", type=float, help="train for this many seconds instead of a step count")
    budget.add_argument("--evals", type=int, help="train until this many cost-function evaluations per example: "
                        "an estimator that evaluates the cost k times per step gets 1/k of the steps")
    p.add_argument("--eval-every", type=int, help="evaluate every N steps (default: the preset's)")
    p.add_argument("--lr-schedule", default="constant", help="constant (default) | cosine: decay every "
                   "learning rate to 0 over the --steps budget (part of the run key)")
    p.add_argument("--no-grad-stats", action="store_true", help="skip the gradient statistics")
    p.add_argument("--grad-draws", type=int, help="gradient estimates per checkpoint (default: the preset's)")
    p.add_argument("--grad-checkpoints", type=_fractions, default=(0.0, 0.5, 1.0), metavar="F,F,...",
                   help="where to measure gradient statistics, as fractions of the budget (default: 0,0.5,1)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    _add_log_option(p)
    return p


def _add_log_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--log", metavar="tensorboard[:DIR]|wandb[:PROJECT]",
                   help="also send each run's history rows and final figures to TensorBoard (event files under "
                        "DIR/<run_id>, default <runs>/tensorboard) or Weights & Biases (project gradbench by "
                        "default; WANDB_MODE etc. apply); comma-separated for both. Needs pip install "
                        "'gradbench[tensorboard]' or 'gradbench[wandb]'")


def build_parser() -> argparse.ArgumentParser:
    common, training, runs = _common(), _training(), _runs()
    parser = _Parser(prog="gradbench", description="Benchmark gradient estimators through discrete operations.")
    parser.add_argument("--version", action="version", version=f"gradbench {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    _add_training_commands(sub, common, training, runs, _config_file())
    _add_record_commands(sub, common, runs)
    _add_data_command(sub, common)
    return parser


def _add_training_commands(sub: Any, common: argparse.ArgumentParser, training: argparse.ArgumentParser,
                           runs: argparse.ArgumentParser, config: argparse.ArgumentParser) -> None:
    parents = [common, training, runs, config]
    run = sub.add_parser("run", parents=parents, help="train one (task, estimator) pair",
                         description="Train one (task, estimator) pair, write its run record, print its row.")
    run.add_argument("--estimator", "-e", default="dab", help="NAME or NAME:key=value,... (default: dab)")
    run.add_argument("--task", "-t", default="sort", help="NAME or NAME:key=value,... (default: sort)")
    seeds = run.add_mutually_exclusive_group()
    seeds.add_argument("--seed", type=int, default=0)
    seeds.add_argument("--seeds", help="several seeds, e.g. 0-4 or 0,2,7: one record each, one table")
    run.add_argument("--batch-seeds", action="store_true", help="with --seeds: train all seeds at once in one "
                     "process (stacked replicas, torch.func.vmap); their records name the batch")
    run.add_argument("--force", action="store_true", help="re-run even if a finished record exists")
    run.add_argument("--json", action="store_true", help="print the run record as JSON on stdout")

    sw = sub.add_parser("sweep", parents=parents, help="run a grid of tasks x estimators x seeds",
                        description="Run a grid; finished runs are skipped, failed and corrupt ones re-run.")
    sw.add_argument("--tasks", default="all", help="comma-separated specs, or all (default)")
    sw.add_argument("--estimators", default="all",
                    help="comma-separated specs (NAME:k=v,k=v continues a spec), or all (default)")
    sw.add_argument("--seeds", default="0", help="e.g. 0-4 or 0,2,7 (default: 0)")
    sw.add_argument("--batch-seeds", action="store_true", help="train each (task, estimator)'s seeds at once, "
                    "in one worker (stacked replicas); estimators that cannot be batched run them one by one")
    sw.add_argument("--shard", help="i/N: run only shard i (0-based) of N; N shards cover the grid once")
    sw.add_argument("--out", help="leaderboard written at the end (default: <runs>/leaderboard.md)")
    _add_executor_options(sw)

    tn = sub.add_parser("tune", parents=parents, help="tune settings on validation, per estimator",
                        description="Run a grid of settings (a sweep: resumable, parallel, Ray), pick per estimator "
                                    "the setting with the best mean validation main metric, run it at the final "
                                    "seeds, and write a selection record; the leaderboard then shows a [tuned] row.")
    tn.add_argument("--task", "-t", required=True, help="NAME or NAME:key=value,...")
    tn.add_argument("--estimators", "--estimator", "-e", required=True,
                    help="comma-separated specs (NAME:k=v,k=v continues a spec)")
    tn.add_argument("--grid", required=True, help="e.g. lr=1e-4,3e-4,1e-3[,tau=0.5,1]: the task's config keys (lr: the "
                    "model's learning rate) or the estimator's; task.KEY / estimator.KEY when both have KEY")
    tn.add_argument("--seeds", default="0-2", help="tuning seeds (default: 0-2)")
    tn.add_argument("--final-seeds", help="seeds the chosen setting is reported at, disjoint from --seeds "
                    "(e.g. 3-10); required unless --allow-overlap (then default: the tuning seeds)")
    tn.add_argument("--allow-overlap", action="store_true", help="allow final seeds that are tuning seeds (their "
                    "test scores are optimistic: chosen on the same runs' validation); recorded as overlap")
    tn.add_argument("--metric", help="the metric to tune on, measured on validation (accuracy or valid_accuracy: "
                    "valid_accuracy); default: the task's main metric")
    tn.add_argument("--extend", type=int, default=None, metavar="N",
                    help="extend a learning-rate grid past an edge choice by up to N steps each way (default: 2; "
                         "0: the grid as given)")
    tn.add_argument("--out", help="leaderboard written at the end (default: <runs>/leaderboard.md)")
    _add_executor_options(tn)

    st = sub.add_parser("study", parents=[common], help="run a study file's claims and write the claims report",
                        description="Run what a study (studies/*.toml: a paper's claims) still needs through the "
                                    "sweep machinery, then judge each claim by the rule the report states.")
    st.add_argument("file", help="the study file, e.g. studies/dab-claims.toml")
    st.add_argument("--profile", required=True,
                    help="which of the file's budgets: e.g. cpu or full; several (cpu,full): each runs in turn and "
                         "the report sets their verdicts side by side")
    st.add_argument("--claims", help="only these claims (comma-separated ids): run a costly study a claim at a time; "
                                     "the report then covers only them")
    st.add_argument("--dry-run", action="store_true", help="list the runs it would make, say how many are missing")
    st.add_argument("--report-only", action="store_true",
                    help="run nothing: judge the records there are and write the report (interim verdicts while a "
                         "long study runs in chunks; claims still missing runs are reported as not judged yet)")
    st.add_argument("--out", help="write the report here (e.g. claims.md; figures beside it); default: stdout")
    st.add_argument("--runs", help="records folder (default: the study file's runs, else ./runs)")
    st.add_argument("--device", help="auto | cpu | cuda | cuda:N (default: the profile's)")
    st.add_argument("--accel", default="auto", help="auto | none | graph | compile (as for run)")
    st.add_argument("--threads", type=_threads, help="torch threads per run: N or auto (as for run)")
    st.add_argument("--shard", help="i/N: run only shard i of N; the report needs every shard's records")
    st.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    _add_log_option(st)
    _add_executor_options(st)


def _add_executor_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workers", type=int, default=1, help="parallel runs (default: 1); slurm: jobs queued or "
                   "running at once")
    p.add_argument("--backend", default="local", choices=["local", "ray", "slurm"],
                   help="local (a process pool, default), ray, or slurm (one job per run, through submitit)")
    p.add_argument("--ray-address", help="connect to this Ray cluster (default: start a local instance)")
    p.add_argument("--slurm-partition", help="slurm: the partition to submit to")
    p.add_argument("--slurm-time", type=int, metavar="MINUTES", help="slurm: each job's time limit (default: 60)")
    p.add_argument("--slurm-cpus-per-task", type=int, metavar="N", help="slurm: CPUs per job (default: 1); also "
                   "the runs' torch threads unless --threads or OMP_NUM_THREADS says otherwise")
    p.add_argument("--slurm-gpus-per-node", type=int, metavar="N", help="slurm: GPUs per job (default: 0)")
    p.add_argument("--slurm", metavar="KEY=VALUE,...", help="slurm: more submitit parameters, e.g. "
                   "account=proj,qos=high,mem_gb=16,constraint=a100; cluster=local runs the jobs as local "
                   "processes (to try a sweep out without Slurm)")


def _executor(args: argparse.Namespace, device: str, runs: str) -> Any:
    """The sweep executor of ``--backend`` and its options."""
    from gradbench.sweep import make_executor, slurm_parameters

    slurm = None
    if args.backend == "slurm":
        slurm = slurm_parameters(args.slurm, args.slurm_partition, args.slurm_time, args.slurm_cpus_per_task,
                                 args.slurm_gpus_per_node)
    return make_executor(args.backend, args.workers, args.ray_address, device, runs_dir=runs, slurm=slurm)


def _add_record_commands(sub: Any, common: argparse.ArgumentParser, runs: argparse.ArgumentParser) -> None:
    """Commands that inspect the registry or read records."""

    lst = sub.add_parser("list", parents=[common], help="list estimators and tasks")
    lst.add_argument("-v", "--verbose", action="store_true", help="show supports, presets and origins")

    desc = sub.add_parser("describe", parents=[common], help="an estimator's or task's config keys and presets",
                          description="Print the config keys of an estimator or task (type, default, meaning), "
                                      "and a task's presets, node and metrics.")
    desc.add_argument("name", help="a registered estimator or task name")
    desc.add_argument("--kind", choices=["estimator", "task"], help="which, when a name is both")

    val = sub.add_parser("validate", parents=[common], help="run the conformance checks on an estimator")
    val.add_argument("--estimator", "-e", required=True, help="NAME or NAME:key=value,...")
    val.add_argument("--seed", type=int, default=0)

    show = sub.add_parser("show", parents=[common, runs], help="summarise a run record")
    show.add_argument("run_id", help="a run id or a unique prefix of one")
    show.add_argument("--json", action="store_true", help="print the raw record")

    rerun = sub.add_parser("rerun", parents=[common, _runs("where the original record is (default: ./runs)")],
                           help="reproduce a run from its record alone")
    rerun.add_argument("run_id", help="a run id or a unique prefix of one")
    rerun.add_argument("--into", default="reruns", help="records folder for the rerun (default: ./reruns)")
    rerun.add_argument("--device", default="auto")
    rerun.add_argument("--threads", type=_threads, help="torch threads (default: the original run's)")

    plt = sub.add_parser("plot", parents=[common, runs], help="PNG learning curves and gradient variance per table")
    plt.add_argument("--task", help="only this task's tables")

    cmp = sub.add_parser("compare", parents=[common, runs],
                         help="paired comparison of two estimators over shared seeds")
    cmp.add_argument("--task", "-t", required=True, help="NAME or NAME:key=value,...")
    cmp.add_argument("a", help="estimator A: NAME or NAME:key=value,...")
    cmp.add_argument("b", help="estimator B")
    cmp.add_argument("--preset", default="quick")
    which = cmp.add_mutually_exclusive_group()
    which.add_argument("--steps", type=int, help="pair only runs with this step budget")
    which.add_argument("--seconds", type=float, help="pair only runs with this time budget")
    which.add_argument("--evals", type=int, help="pair only runs with this cost-evaluation budget")
    cmp.add_argument("--lr-schedule", default="constant", help="pair only runs with this schedule (with --steps)")
    cmp.add_argument("--json", action="store_true", help="print the comparison as JSON")

    lb = sub.add_parser("leaderboard", parents=[common, runs], help="write a leaderboard from run records")
    lb.add_argument("--out", help="output file (default: <runs>/leaderboard.md)")

    exp = sub.add_parser("export", parents=[common, runs], help="every run record as one flat row: csv, parquet, jsonl",
                         description="Every run record (any status) as one row of flat columns: ids, task and "
                                     "estimator with their config keys, preset, budget, seed, metrics, gradient "
                                     "checkpoints, cost, provenance (docs/cli.md#export).")
    exp.add_argument("--format", default="csv", choices=["csv", "parquet", "jsonl"], help="default: csv")
    exp.add_argument("--out", help="write here (default: stdout; parquet needs --out)")

    rep = sub.add_parser("report", parents=[common, runs], help="a static HTML site of the records",
                         description="A static site (no server, no network): the leaderboard's tables, sortable and "
                                     "filterable, their plots, a page per run, and claims reports as HTML.")
    rep.add_argument("--html", required=True, metavar="DIR", help="write the site into DIR (new, empty, or made by "
                     "this command before); open DIR/index.html")
    rep.add_argument("--claims", action="extend", nargs="+", default=[], metavar="FILE.md",
                     help="claims reports (gradbench study --out) to include as pages; needs pip install "
                          "'gradbench[html]'")


def _add_data_command(sub: Any, common: argparse.ArgumentParser) -> None:

    dat = sub.add_parser("data", parents=[common], help="list the image datasets or download one",
                         description="Where each dataset is found ('list'), or download one with checksums ('fetch').")
    dsub = dat.add_subparsers(dest="data_command", metavar="ACTION", parser_class=_Parser)
    dsub.add_parser("list", help="each dataset: found where, or how to get it")
    fetch = dsub.add_parser("fetch", help="download NAME's files from the official source, verifying checksums")
    fetch.add_argument("name", help="fashion-mnist, mnist or omniglot")
    fetch.add_argument("--dir", help="download under DIR/NAME (default: the user cache, ~/.cache/gradbench)")
    fetch.add_argument("--url", help="base URL to download from instead of the official one (a mirror)")
    fetch.add_argument("--sha256", help="omniglot only (required): the SHA-256 of chardata.mat you trust; no "
                                        "checksum is published, so it is pinned beside the file for later use")


def _fractions(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated fractions like 0,0.5,1, got {text!r}") from None


def _threads(text: str) -> int | str:
    from gradbench.threads import parse

    return parse(text)


def _version() -> str:
    from gradbench import __version__

    return __version__


def run_options(args: argparse.Namespace) -> Any:
    """The RunOptions of a training subcommand's arguments."""
    from gradbench.spec import RunOptions

    return RunOptions(steps=args.steps, seconds=args.seconds, evals=args.evals, lr_schedule=args.lr_schedule,
                      eval_every=args.eval_every, grad_stats=not args.no_grad_stats, grad_draws=args.grad_draws,
                      grad_checkpoints=args.grad_checkpoints, device=args.device, accel=args.accel, runs=args.runs,
                      threads=args.threads, log=_log(args.log),
                      force=getattr(args, "force", False), progress=not args.no_progress)


def _log(text: str | None) -> str | None:
    """``--log``, checked now: an unknown logger or a missing library stops the command before training."""
    from gradbench.loggers import parse

    parse(text)
    return text


def _records_folder(path: str, flag: str = "--runs") -> None:
    """Refuse a records folder (``--runs``, ``--into``) that cannot hold records before any training starts."""
    if Path(path).exists() and not Path(path).is_dir():
        raise UsageError(f"cannot use {flag} {path!r} as a records folder: it is a file; pass {flag} DIR (a folder, "
                         f"created if missing)")
    try:
        Path(path).mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as e:
        raise UsageError(f"cannot use {flag} {path!r} as a records folder: {e.strerror or e}") from None


def _argv() -> list[str]:
    return ["gradbench", *sys.argv[1:]]


# ---------------------------------------------------------------------------------- commands


def cmd_run(args: argparse.Namespace) -> int:
    from gradbench.report import format_rows
    from gradbench.runner import execute_seeds
    from gradbench.spec import resolve
    from gradbench.sweep import parse_seeds

    if args.batch_seeds and args.seeds is None:
        raise UsageError("--batch-seeds needs --seeds (e.g. --seeds 0-4)")
    opts = run_options(args)
    seeds = parse_seeds(args.seeds) if args.seeds is not None else [args.seed]
    specs = [resolve(args.task, args.estimator, preset=args.preset, seed=seed, options=opts) for seed in seeds]
    _records_folder(args.runs)
    done = []
    for group in [specs] if args.batch_seeds else [[spec] for spec in specs]:
        for record in execute_seeds(group, device=opts.device, runs_dir=opts.runs, force=opts.force,
                                    progress=opts.progress, argv=_argv(), accel=opts.accel, batch=args.batch_seeds,
                                    threads=opts.threads, log=opts.log):
            done.append(record)
            _report_run(record, args.traceback)
    if args.json:  # one record, or a list of them with --seeds
        print(json.dumps(done if args.seeds is not None else done[0], indent=2))
    else:
        print(format_rows(done))
    return EXIT_OK if all(r["status"] == "ok" for r in done) else EXIT_FAILED


def _report_run(record: dict[str, Any], show_traceback: bool) -> None:
    """stderr notes for one finished run: reuse, and failure (with its traceback on request)."""
    if record.get("reused"):
        print(f"gradbench: reusing finished run {record['run_id']} (pass --force to re-run)", file=sys.stderr)
    if record["status"] == "ok":
        return
    print(f"gradbench: run {record['status']} (seed {record['seed']}): {record['error']}", file=sys.stderr)
    if show_traceback and record.get("path"):
        from gradbench.records import history_path, read_history

        rows = read_history(history_path(Path(record["path"])))
        tb = next((r["traceback"] for r in reversed(rows) if "traceback" in r), None)
        print(tb or "gradbench: no traceback recorded for this run", file=sys.stderr)


def cmd_list(args: argparse.Namespace) -> int:
    if not args.verbose:
        print("estimators: " + ", ".join(ESTIMATORS.names()))
        print("tasks:      " + ", ".join(TASKS.names()))
        return EXIT_OK
    from gradbench.report import registry_tables

    print(registry_tables())
    return EXIT_OK


def cmd_describe(args: argparse.Namespace) -> int:
    from gradbench.report import describe

    kinds = [args.kind] if args.kind else [k for k, reg in (("estimator", ESTIMATORS), ("task", TASKS))
                                           if args.name in reg.names()]
    if len(kinds) > 1:
        raise UsageError(f"{args.name!r} is both an estimator and a task; pass --kind estimator or --kind task")
    if not kinds:
        import difflib

        known = [*ESTIMATORS.names(), *TASKS.names()]
        close = difflib.get_close_matches(args.name, known, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise UsageError(f"no estimator or task named {args.name!r}{hint} (known: {', '.join(known)})")
    registry = ESTIMATORS if kinds[0] == "estimator" else TASKS
    print(describe(registry.get(args.name), kinds[0]))
    return EXIT_OK


def cmd_validate(args: argparse.Namespace) -> int:
    from gradbench.config import parse_spec
    from gradbench.multisample import estimator_class
    from gradbench.testing import check_estimator

    name, values = parse_spec(args.estimator)
    cls, values = estimator_class(name, values)
    config = cls.make_config(values)
    results = check_estimator(cls, config, seed=args.seed)
    for r in results:
        print(r)
    failed = [r for r in results if not r.passed]
    print(f"{cls.name}: {len(results) - len(failed)}/{len(results)} checks passed")
    return EXIT_FAILED if failed else EXIT_OK


def unsupported_by_kind() -> dict[str, list[str]]:
    """Node kind -> registered estimators that cannot run it (for the leaderboard's n/a rows)."""
    from gradbench.node import KINDS

    out: dict[str, list[str]] = {k: [] for k in KINDS}
    for name in ESTIMATORS.names():
        try:
            supports = ESTIMATORS.get(name).tags_for().supports  # at the default config
        except (UsageError, AttributeError):  # a broken plugin must not stop the leaderboard
            continue
        for kind in KINDS - set(supports):
            out[kind].append(name)
    return out


def installed_versions() -> dict[str, str]:
    """Estimator name -> the installed version (the leaderboard shows records of other versions apart)."""
    out: dict[str, str] = {}
    for name in ESTIMATORS.names():
        try:
            out[name] = str(ESTIMATORS.get(name).version)
        except (UsageError, AttributeError):  # a broken plugin must not stop the leaderboard
            continue
    return out


def _write_leaderboard(runs: str, out: str | None) -> str:
    from gradbench.compare import registry_label
    from gradbench.leaderboard import build

    path = out or str(Path(runs) / "leaderboard.md")
    _, problems = build(runs, path, unsupported_by_kind(), relabel=registry_label, versions=installed_versions())
    for p in problems:
        print(f"gradbench: skipped {p}", file=sys.stderr)
    return path


def _has_records(runs: str, command: str) -> None:
    """``leaderboard``, ``plot``, ``export`` and ``report`` share one rule: nothing to show is a usage error
    (exit 2, nothing written). A folder that is missing, is a file, or holds no run record is almost always a
    wrong ``--runs``."""
    if not Path(runs).is_dir():
        what = "is a file" if Path(runs).exists() else "does not exist"
        raise UsageError(f"runs folder {runs!r} {what}; pass --runs DIR with the run records")
    if next(Path(runs).glob("*/*/*.json"), None) is None:
        raise UsageError(f"no run records in {runs!r}, so no {command} to make; pass --runs DIR, the folder that "
                         f"holds <task>/<estimator>/<run_id>.json")


def cmd_leaderboard(args: argparse.Namespace) -> int:
    _has_records(args.runs, "leaderboard")
    path = _write_leaderboard(args.runs, args.out)
    text = Path(path).read_text()
    n_tables = text.count("\n### ")
    print(f"wrote {path} ({n_tables} table{'s' if n_tables != 1 else ''} from {args.runs})")
    return EXIT_OK


def cmd_plot(args: argparse.Namespace) -> int:
    from gradbench.compare import registry_label
    from gradbench.plots import plot

    _has_records(args.runs, "plot")
    written = plot(args.runs, args.task, relabel=registry_label)
    if not written:
        raise UsageError(f"no finished runs to plot in {args.runs}" + (f" for task {args.task!r}" if args.task else ""))
    for path in written:
        print(path)
    return EXIT_OK


def cmd_export(args: argparse.Namespace) -> int:
    from gradbench.export import export

    _has_records(args.runs, "export")
    text, n, problems = export(args.runs, args.format, args.out)
    for p in problems:
        print(f"gradbench: skipped {p}", file=sys.stderr)
    if text is not None:
        sys.stdout.write(text)
    else:
        print(f"wrote {args.out} ({n} run{'s' if n != 1 else ''} from {args.runs})")
    return EXIT_OK


def cmd_report(args: argparse.Namespace) -> int:
    from gradbench.compare import registry_label
    from gradbench.site import build

    _has_records(args.runs, "report")
    site = build(args.runs, args.html, args.claims, unsupported_by_kind(), relabel=registry_label,
                 versions=installed_versions())
    for p in site.problems:
        print(f"gradbench: skipped {p}", file=sys.stderr)
    for note in site.notes:
        print(f"gradbench: {note}", file=sys.stderr)
    print(f"wrote {site.index} ({site.tables} table{'s' if site.tables != 1 else ''}, {site.plots} plots, "
          f"{site.runs} run pages, {len(site.claims)} claims pages)")
    return EXIT_OK


def cmd_compare(args: argparse.Namespace) -> int:
    from gradbench.compare import compare, format_comparison

    budget = ({"steps": args.steps} if args.steps else {"seconds": args.seconds} if args.seconds
              else {"evals": args.evals} if args.evals else None)
    if args.lr_schedule != "constant":
        if not (args.steps or args.evals):
            raise UsageError("--lr-schedule needs --steps or --evals: a schedule runs over a known budget")
        budget["lr_schedule"] = args.lr_schedule
    result = compare(args.runs, args.task, args.a, args.b, preset=args.preset, budget=budget)
    print(json.dumps(result, indent=2) if args.json else format_comparison(result))
    return EXIT_OK


def cmd_sweep(args: argparse.Namespace) -> int:
    from gradbench.sweep import expand, parse_seeds, parse_shard, run_sweep

    opts = run_options(args)
    shard = parse_shard(args.shard)
    grid = expand(args.tasks, args.estimators, parse_seeds(args.seeds), preset=args.preset,
                  batch_seeds=args.batch_seeds, options=opts)
    for line in grid.unsupported:
        print(f"gradbench: skipping unsupported pair {line}", file=sys.stderr)
    _records_folder(args.runs)
    executor = _executor(args, args.device, args.runs)
    result = run_sweep(grid, args.runs, executor, device=args.device, shard=shard, plugins=args.plugin,
                       progress=opts.progress, accel=opts.accel, threads=opts.threads, log=opts.log)
    for line in result.errors:
        print(f"gradbench: {line}", file=sys.stderr)
    path = _write_leaderboard(args.runs, args.out)
    print(f"sweep: {result.total} runs in shard {shard[0]}/{shard[1]}: {result.skipped} already finished, "
          f"{result.ok} ok, {result.failed} failed; wrote {path}")
    return EXIT_FAILED if result.failed else EXIT_OK


def cmd_tune(args: argparse.Namespace) -> int:
    from gradbench.report import format_selection
    from gradbench.sweep import parse_seeds, run_sweep
    from gradbench.tune import EXTEND_LIMIT, tune

    opts = run_options(args)
    seeds = parse_seeds(args.seeds)
    final = parse_seeds(args.final_seeds) if args.final_seeds else None
    if args.extend is not None and args.extend < 0:
        raise UsageError(f"--extend must be >= 0, got {args.extend}")
    _records_folder(args.runs)

    def sweep(grid):
        executor = _executor(args, args.device, args.runs)
        return run_sweep(grid, args.runs, executor, device=args.device, plugins=args.plugin,
                         progress=opts.progress, accel=opts.accel, threads=opts.threads, log=opts.log)

    extend = EXTEND_LIMIT if args.extend is None else args.extend
    result = tune(args.task, args.estimators, args.grid, seeds, final, args.preset, opts, sweep, argv=_argv(),
                  metric=args.metric, allow_overlap=args.allow_overlap, extend=extend)
    for line in result.unsupported:
        print(f"gradbench: skipping unsupported pair {line}", file=sys.stderr)
    if result.failed_runs:
        print(f"gradbench: {result.failed_runs} run(s) failed or diverged (counted: such a setting is not eligible)",
              file=sys.stderr)
    for sel in result.selections:
        print(format_selection(sel))
    if result.missing:
        print(f"gradbench: {result.missing} run(s) have no record yet; no selection written for their estimators",
              file=sys.stderr)
    path = _write_leaderboard(args.runs, args.out)
    print(f"tune: {len(result.selections)} selection(s) written; leaderboard {path}")
    chosen = all(sel.get("choice") for sel in result.selections)
    return EXIT_OK if chosen and not result.missing else EXIT_FAILED


def _study_dry_run(plans: list[Any], shard: tuple[int, int]) -> int:
    """List each profile's missing runs and tuned sides still to choose; count them."""
    from gradbench import study

    for plan in plans:
        todo = study.missing(plan, shard)
        for s in todo.runs:
            print(f"missing  {s.task_cls.label_for(s.task_config, s.preset)}  "
                  f"{s.estimator_cls.label_for(s.estimator_config)}  seed {s.seed}  {json.dumps(s.budget)}  "
                  f"{s.run_id}")
        for sp, n in todo.unchosen:
            print(f"pending  {sp.task}  {sp.estimator}: {n} final run(s), known once {sp.waits_on} is done")
        print(f"study {plan.study.name} ({plan.profile.name}): {todo.count} run(s) missing in {plan.runs}")
    return EXIT_OK


def cmd_study(args: argparse.Namespace) -> int:
    from gradbench import study
    from gradbench.sweep import parse_shard, run_sweep

    log = _log(args.log)
    spec = study.only_claims(study.load_study(args.file), args.claims)
    names = [n.strip() for n in args.profile.split(",") if n.strip()]
    if not names or len(set(names)) < len(names):
        raise UsageError(f"--profile: give profile names, each once (got {args.profile!r})")
    plans = [study.plan(spec, name, runs=args.runs, device=args.device) for name in names]
    shard = parse_shard(args.shard)
    if args.dry_run:
        return _study_dry_run(plans, shard)
    if args.report_only and shard != (0, 1):
        raise UsageError("--report-only judges every shard's records: leave out --shard")
    failed = missing = 0
    judged = []
    for plan in plans:
        runs = plan.runs
        _records_folder(runs)
        device = args.device or plan.profile.device

        def sweep(grid, more=None, runs=runs, device=device):
            executor = _executor(args, device, runs)
            return run_sweep(grid, runs, executor, device=device, shard=shard, plugins=args.plugin,
                             progress=not args.no_progress, accel=args.accel, threads=args.threads, log=log,
                             more=more)

        n_failed, todo = (study.report_study(plan, argv=_argv()) if args.report_only
                          else study.run_study(plan, sweep, argv=_argv()))
        failed += n_failed
        missing += todo.count
        if shard != (0, 1):  # the report needs every shard's records: run the study unsharded once they are in
            print(f"study {spec.name} ({plan.profile.name}): shard {shard[0]}/{shard[1]} done; {todo.count} run(s) "
                  f"still missing across all shards (the tuned sides' finals need every shard's grid)")
        judged.append((plan, study.judge_all(plan)))
    if failed:
        print(f"gradbench: {failed} run(s) failed or diverged (counted in the report)", file=sys.stderr)
    if shard != (0, 1):
        return EXIT_FAILED if failed else EXIT_OK
    if missing:
        print(f"gradbench: {missing} run(s) still missing (another shard's, or a failed grid); the report "
              f"judges only complete claims", file=sys.stderr)
    _write_study_report(args, spec.name, judged)
    unjudged = _unjudged(judged)
    return EXIT_FAILED if failed or missing or unjudged else EXIT_OK


def _write_study_report(args: argparse.Namespace, name: str, judged: list[tuple[Any, dict[str, Any]]]) -> None:
    """The claims report, to ``--out`` (figures beside it) or stdout: one profile's, or several side by side."""
    from gradbench import claims

    out = Path(args.out) if args.out else None
    text = (claims.render(judged[0][0], args.file, out, _argv(), judged[0][1]) if len(judged) == 1
            else claims.render_many(judged, args.file, out, _argv()))
    if out is None:
        print(text, end="")
    else:
        from gradbench.records import atomic_write_text

        atomic_write_text(out, text)
        print(f"study {name} ({args.profile}): wrote {out}")


def _unjudged(judged: list[tuple[Any, dict[str, Any]]]) -> list[str]:
    """The claims with no verdict (runs missing), said on stderr: ``id`` or, across profiles, ``id (profile)``."""
    unjudged = [f"{cid} ({plan.profile.name})" if len(judged) > 1 else cid
                for plan, verdicts in judged for cid, result in verdicts.items() if result.outcome is None]
    if unjudged:
        print(f"gradbench: not judged: {', '.join(unjudged)}", file=sys.stderr)
    return unjudged


def _find_record(runs: str, run_id: str) -> tuple[Path, dict[str, Any]]:
    """The record whose id is ``run_id`` or starts with it (a unique prefix)."""
    from gradbench import records

    if not Path(runs).is_dir():
        raise UsageError(f"no records folder {runs!r} (pass --runs DIR)")
    matches = sorted(Path(runs).glob(f"*/*/{run_id}*.json")) if run_id.isalnum() else []
    matches = [m for m in matches if not m.name.endswith(".history.jsonl")]
    if not matches:
        raise UsageError(f"no record {run_id!r} under {runs}")
    if len({m.stem for m in matches}) > 1:
        stems = sorted({m.stem for m in matches})
        ids, more = ", ".join(stems[:5]), ", ..." if len(stems) > 5 else ""
        raise UsageError(f"run id prefix {run_id!r} is ambiguous under {runs}: {ids}{more}")
    try:
        return matches[0], records.read_record(matches[0])
    except records.CorruptRecord as e:
        raise UsageError(f"record {matches[0].stem} is corrupt: {e}") from None


def cmd_show(args: argparse.Namespace) -> int:
    from gradbench.report import summary

    path, record = _find_record(args.runs, args.run_id)
    record["path"] = str(path)
    print(json.dumps(record, indent=2) if args.json else summary(record))
    return EXIT_OK


def cmd_rerun(args: argparse.Namespace) -> int:
    from gradbench import reproduce
    from gradbench.report import format_rows
    from gradbench.runner import execute
    from gradbench.spec import spec_from_record

    _, original = _find_record(args.runs, args.run_id)
    spec = spec_from_record(original)
    _records_folder(args.into, "--into")
    threads = args.threads or original.get("provenance", {}).get("threads")  # the original's, to reproduce it
    accel = (original.get("accel") or {}).get("used") or "none"  # its execution path too (none: eager)
    record = execute(spec, device=args.device, runs_dir=args.into, force=True, progress=True, argv=_argv(),
                     threads=threads, accel=accel)
    _report_run(record, args.traceback)
    print(format_rows([record]))
    verdict = reproduce.check(original, record)
    print(verdict.message())
    return EXIT_OK if record["status"] == "ok" and not verdict.failed else EXIT_FAILED


def cmd_data(args: argparse.Namespace) -> int:
    from tabulate import tabulate

    from gradbench import data

    if args.data_command == "fetch":
        out = data.fetch(args.name, args.dir, args.url, log=lambda m: print(m, file=sys.stderr), sha256=args.sha256)
        print(out)
        return EXIT_OK
    if args.data_command != "list":
        raise UsageError("gradbench data needs an action: list or fetch")
    rows = []
    for name in data.DATASETS:
        if name == "digits":
            rows.append([name, "ok", "embedded in scikit-learn"])
            continue
        try:
            rows.append([name, "ok", str(data.locate(name))])
        except data.DataMissing as e:
            rows.append([name, "missing", str(e)])
        except data.DataError as e:
            rows.append([name, "bad", str(e)])
    print(tabulate(rows, headers=["dataset", "status", "where / what to do"], tablefmt="github"))
    return EXIT_OK


COMMANDS = {"run": cmd_run, "sweep": cmd_sweep, "list": cmd_list, "describe": cmd_describe,
            "validate": cmd_validate, "show": cmd_show, "rerun": cmd_rerun, "plot": cmd_plot,
            "compare": cmd_compare, "leaderboard": cmd_leaderboard, "data": cmd_data, "tune": cmd_tune,
            "study": cmd_study, "export": cmd_export, "report": cmd_report}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = None
    try:
        argv = list(sys.argv[1:] if argv is None else argv)
        configfile.apply(parser, argv)  # --config FILE.toml: its values become the defaults
        args = parser.parse_args(argv)
        if not args.command:
            parser.print_help(sys.stderr)
            return EXIT_USAGE
        for plugin in args.plugin:
            load_plugin(plugin)
        return COMMANDS[args.command](args)
    except UsageError as e:
        if getattr(args, "traceback", False) and e.__cause__ is not None:
            traceback.print_exception(e.__cause__, file=sys.stderr)
        print(f"gradbench: error: {' '.join(str(e).split())}", file=sys.stderr)  # always one line
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("gradbench: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except OSError as e:  # e.g. a full disk while writing a record: say so in one line
        print(f"gradbench: error: {' '.join(str(e).split())}", file=sys.stderr)
        return EXIT_FAILED


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
