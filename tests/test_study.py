"""Studies (gradbench study): the relative gain's interval, the verdict rule's false-alarm rates by
simulation, the study file's checks, and the command end to end on small settings.

Simulations are seeded; each rate is checked against a band of about 4 binomial standard deviations, so
a correct rule fails a check with probability below 1e-4 per bound (and, being seeded, never flakes).
"""

from __future__ import annotations

import concurrent.futures as cf
import glob
import json
import math
from pathlib import Path

import numpy as np
import pytest

from gradbench import study
from gradbench.cli import main
from gradbench.errors import UsageError
from gradbench.results import verdicts
from gradbench.spec import RunOptions, resolve, spec_from_record
from gradbench.stats import relative_gain
from gradbench.sweep import Grid, todo

ROOT = Path(__file__).resolve().parents[1]
TRIALS = 4000


def _pairs(rng: np.random.Generator, n: int, mean_b: float, gain: float, higher: bool, sd: float = 0.05,
           rho: float = 0.6) -> tuple[np.ndarray, np.ndarray]:
    """n seeds of (A, B): B ~ N(mean_b, sd), A's mean set so that the true relative gain is ``gain``,
    A and B correlated (seeds share data and initial weights)."""
    s = 1.0 if higher else -1.0
    mean_a = mean_b + s * gain * abs(mean_b)
    cov = np.array([[1.0, rho], [rho, 1.0]]) * sd**2
    draws = rng.multivariate_normal([mean_a, mean_b], cov, size=n)
    return draws[:, 0], draws[:, 1]


# ----------------------------------------------------------------------------------- relative gain


def test_relative_gain_signs_follow_the_better_direction():
    assert relative_gain([1.1, 1.2], [1.0, 1.0], True).gain == pytest.approx(0.15)
    assert relative_gain([0.9, 0.8], [1.0, 1.0], False).gain == pytest.approx(0.15)  # lower loss is a gain
    # ELBOs are negative and higher is better: -90 against -100 is +10%
    assert relative_gain([-90.0, -90.0], [-100.0, -100.0], True).gain == pytest.approx(0.10)
    assert relative_gain([-110.0, -110.0], [-100.0, -100.0], True).gain == pytest.approx(-0.10)


def test_relative_gain_interval_degenerate_and_unbounded_cases():
    exact = relative_gain([3.0, 3.0, 3.0], [4.0, 4.0, 4.0], False)
    assert exact.lo == exact.hi == pytest.approx(0.25) and exact.p == 0.0
    wild = relative_gain([1.0, 2.0, 3.0], [0.5, -0.4, 0.2], True)  # B's mean not clearly away from 0
    assert wild.lo == -math.inf and wild.hi == math.inf
    one = relative_gain([1.0], [2.0], True)
    assert one.n == 1 and math.isnan(one.p) and one.lo == -math.inf


@pytest.mark.parametrize("higher,mean_b,gain", [(True, 0.8, 0.1), (False, 3.0, 0.2), (True, -100.0, 0.05)])
def test_fieller_interval_covers_the_true_gain_95_percent_of_the_time(higher, mean_b, gain):
    rng = np.random.default_rng(1)
    miss = 0
    for _ in range(TRIALS):
        a, b = _pairs(rng, 5, mean_b, gain, higher, sd=0.05 * abs(mean_b))
        g = relative_gain(a, b, higher)
        miss += not (g.lo <= gain <= g.hi)
    band = 4 * math.sqrt(0.05 * 0.95 / TRIALS)
    assert abs(miss / TRIALS - 0.05) < band, miss / TRIALS


# ------------------------------------------------------------------------------------ verdict rule
# The rules themselves and their simulated rates: tests/test_rules.py. Here: what the study feeds them.


def test_seeds_to_settle():
    n = verdicts.seeds_to_settle(0.1, 0.05)
    assert n is not None and 22 < n < 28  # the 98% t (the rules' level) * 0.1 / sqrt(n) < 0.05 needs n near 25
    assert verdicts.seeds_to_settle(10.0, 1e-4) is None
    assert verdicts.seeds_to_settle(0.0, 0.0) is None  # identical sides: no number of seeds decides
    assert verdicts.seeds_to_settle(0.0, 0.1) == 7  # never fewer than a definitive verdict needs


# ----------------------------------------------------------------------------------------- files


GOOD = """
name = "t"
title = "T"
runs = "{runs}"
[profiles.cpu]
preset = "quick"
seeds = "0-2"
device = "cpu"
grad_checkpoints = [0.0, 1.0]
grad_draws = 20
[[claims]]
id = "toy-gain"
title = "reinforce beats ste on the toy"
quote = "REINFORCE is better."
task = "toy"
a = "reinforce"
b = "ste"
metric = "gap"
gain = 10
[claims.cpu]
steps = 60
[[claims]]
id = "toy-level"
title = "ste reaches a gap of 4.9"
quote = "It reaches 4.9."
task = "toy"
a = "ste"
metric = "gap"
level = 4.9
[claims.cpu]
steps = 60
[[claims]]
id = "toy-variance"
title = "a baseline lowers the variance"
quote = "Lower variance."
task = "toy"
a = "reinforce"
b = "reinforce:baseline=none,samples=1"
metric = "gradient.variance"
checkpoint = "start"
[claims.cpu]
steps = 60
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "s.toml"
    path.write_text(text.replace("{runs}", str(tmp_path / "runs")))
    return path


@pytest.mark.parametrize("change,message", [
    (("gain = 10", "gain = 10\ncolour = 1"), "unknown key 'colour'"),
    (("[profiles.cpu]", "[profiles.cpu]\nspeed = 1"), "unknown key 'speed'"),
    (("steps = 60\n[[claims]]", "steps = 60\nepochs = 3\n[[claims]]"), "unknown key 'epochs'"),
    (("level = 4.9", "level = 4.9\nb = \"dab\""), "a 'level' claim is about side A alone"),
    (("gain = 10", "gain = -5"), "'gain' is the relative gain"),
    (("gain = 10", "gain = \"ten\""), "'gain' must be a number"),
    (("level = 4.9", "level = 4.9\npaper_steps = 0"), "'paper_steps' is how many steps the paper trained for"),
    (("level = 4.9", "level = 4.9\npaper_steps = 2.5e7"), "'paper_steps' is how many steps the paper trained for"),
    (("seeds = \"0-2\"", "seeds = \"two\""), "bad seeds"),
    (("id = \"toy-level\"", "id = \"toy-gain\""), "claim id 'toy-gain' given twice"),
    (("id = \"toy-level\"", "id = \"Toy Level\""), "'id' must be lowercase"),
    (("steps = 60\n[[claims]]", "steps = 60\nevals = 60\n[[claims]]"), "give one budget"),
    (("[profiles.cpu]", "[profiles.quote]\npreset = \"quick\"\nseeds = \"0\"\n[profiles.cpu]"),
     "cannot be named 'quote'"),
    (("b = \"ste\"", "b = \"ste\"\n[claims.paper]"), "unknown key 'paper'"),
    (("name = \"t\"", "name = \"t\"\nname2 = [1"), "not valid TOML"),
    # the final runs are never tuning runs
    (("seeds = \"0-2\"", "seeds = \"0-2\"\ntune_seeds = \"2-4\""), "'seeds' and 'tune_seeds' share seed"),
    (("steps = 60\n[[claims]]", "steps = 60\nextend = -1\n[[claims]]"), "'extend' must be an integer >= 0"),
])
def test_bad_study_files_are_one_line_errors(tmp_path, change, message):
    path = _write(tmp_path, GOOD.replace(*change, 1))
    with pytest.raises(UsageError, match=message.replace("(", r"\(")):
        study.load_study(path)


def test_a_claim_without_a_budget_for_a_profile_is_refused(tmp_path):
    text = GOOD.replace("[profiles.cpu]", "[profiles.gpu]\npreset = \"paper\"\nseeds = \"0\"\n[profiles.cpu]")
    with pytest.raises(UsageError, match="no budget for profile 'gpu'"):
        study.load_study(_write(tmp_path, text))


@pytest.mark.parametrize("change,message", [
    (("metric = \"gap\"", "metric = \"accuracy\""), "has no test metric 'accuracy'"),
    (("metric = \"gradient.variance\"", "metric = \"gradient.colour\""), "unknown gradient statistic"),
    (("a = \"reinforce\"", "a = \"no-such-estimator\""), "no-such-estimator"),
    (("steps = 60\n[[claims]]", "steps = 60\ntune = \"lr=1e-2,3e-2\"\n[[claims]]"), "no validation metric"),
])
def test_bad_claims_are_refused_before_any_run(tmp_path, change, message, capsys):
    path = _write(tmp_path, GOOD.replace(*change, 1))
    assert main(["study", str(path), "--profile", "cpu", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "runs").exists()


def test_unknown_profile_and_missing_file_exit_2(tmp_path, capsys):
    path = _write(tmp_path, GOOD)
    assert main(["study", str(path), "--profile", "paper"]) == 2
    assert "no profile 'paper' (known: cpu)" in capsys.readouterr().err
    assert main(["study", str(tmp_path / "none.toml"), "--profile", "cpu"]) == 2
    assert "no study file" in capsys.readouterr().err


SHIPPED = [(name, profile) for name, profiles in (("dab-claims", ("cpu", "full", "paper")),
                                                   ("relax-toy", ("cpu", "paper")), ("disarm-vae", ("cpu",)),
                                                   ("reinmax", ("cpu",))) for profile in profiles]


@pytest.mark.parametrize("name,profile", SHIPPED)
def test_the_shipped_studies_load_and_resolve(name, profile):
    s = study.load_study(ROOT / "studies" / f"{name}.toml")
    assert set(s.profiles) == {pr for n, pr in SHIPPED if n == name}  # every shipped profile is tested here
    p = study.plan(s, profile, runs="/nonexistent")
    assert set(p.sides) == {c.id for c in s.claims}
    if name == "dab-claims":
        assert {c.id for c in s.claims} >= {"sort-level", "sort-gain", "classify-sort", "represent-recon",
                                            "represent-probe", "density-elbo"}
        # each claim is tuned on the validation version of its own metric: recon and probe share the grid's
        # runs, not the choice
        recon, probe = p.sides["represent-recon"][0].tuning, p.sides["represent-probe"][0].tuning
        if profile != "paper":  # the paper profile runs the presets' settings, untuned
            assert recon.metric == "valid_recon" and probe.metric == "valid_probe_accuracy"
            assert [s.run_id for s in recon.runs] == [s.run_id for s in probe.runs]
            assert recon.selection_id(p.profile.seeds) != probe.selection_id(p.profile.seeds)
    # final seeds are never tuning seeds, and enough pairs for a definitive verdict (gradbench.rules) unless a
    # claim says it reports fewer (a trend, not a verdict: the sorting claims of the full profile)
    for sides in p.sides.values():
        for sp in sides:
            assert not set(sp.final_seeds) & set(p.profile.tune_seeds)
    assert not set(p.profile.seeds) & set(p.profile.tune_seeds)
    assert len(p.profile.seeds) >= 7


# -------------------------------------------------------------------------------------- end to end


def test_study_end_to_end_on_the_toy(tmp_path, capsys):
    path = _write(tmp_path, GOOD)
    assert main(["study", str(path), "--profile", "cpu", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "9 run(s) missing" in out  # reinforce, ste, reinforce(baseline=none): 3 seeds each, shared sides once
    # --report-only runs nothing: before any run every claim is not judged yet, and no record is written
    interim = tmp_path / "interim.md"
    assert main(["study", str(path), "--profile", "cpu", "--report-only", "--out", str(interim)]) == 1
    assert "not judged: toy-gain, toy-level, toy-variance" in capsys.readouterr().err
    assert interim.read_text().count("**Verdict: not run**") == 3
    assert not glob.glob(str(tmp_path / "runs" / "*" / "*" / "*.json"))
    report = tmp_path / "claims.md"
    assert main(["study", str(path), "--profile", "cpu", "--out", str(report), "--no-progress"]) == 0
    text = report.read_text()
    # once the runs are in, the report-only verdicts are the study's own
    assert main(["study", str(path), "--profile", "cpu", "--report-only", "--out", str(interim)]) == 0
    verdicts = [line for line in text.splitlines() if line.startswith("**Verdict:")]
    assert len(verdicts) == 3 and verdicts == [line for line in interim.read_text().splitlines()
                                               if line.startswith("**Verdict:")]
    for cid in ("toy-gain", "toy-level", "toy-variance"):
        assert f"## {cid}" in text and (tmp_path / "claims-figures" / f"{cid}.png").exists()
    assert "**Verdict:" in text and "not run" not in text
    assert "Learning curves (test gap" in text and "paired 95% CI" in text and "Tests (one-sided" in text
    assert "Multiplicity: Holm" in text
    # the figures in the report are the records' own: recompute one claim's gain from them
    recs = [json.loads(Path(f).read_text()) for f in glob.glob(str(tmp_path / "runs" / "toy" / "*" / "*.json"))]
    gap = {(r["estimator"]["label"], r["seed"]): r["metrics"]["gap"]["value"] for r in recs}
    g = relative_gain([gap[("reinforce", s)] for s in range(3)], [gap[("ste", s)] for s in range(3)], False)
    assert f"{100 * g.gain:+.1f}% ({100 * g.lo:+.1f}% to {100 * g.hi:+.1f}%)" in text
    assert main(["study", str(path), "--profile", "cpu", "--dry-run"]) == 0
    assert "0 run(s) missing" in capsys.readouterr().out
    # the paper trained for 6,000 steps: 60 is far below, a trend, and the level claim's cell and verdict say so
    far = _write(tmp_path, GOOD.replace("level = 4.9", "level = 4.9\npaper_steps = 6000"))
    main(["study", str(far), "--profile", "cpu", "--report-only", "--out", str(interim)])
    row = next(line for line in interim.read_text().splitlines() if line.startswith("| [toy-level]"))
    assert "60 steps (1/100 of the paper's 6,000: a trend)" in row and "**not settled at this budget**" in row
    path = _write(tmp_path, GOOD)
    # a comparison missing one of B's runs is not judged, and shows no gain (A's mean is in A's column); its
    # verdict cell says runs are missing, where a claim with no final run at all says "not run" (above)
    ste = glob.glob(str(tmp_path / "runs" / "toy" / "ste" / "*.json"))
    Path(ste[0]).unlink()
    assert main(["study", str(path), "--profile", "cpu", "--report-only", "--out", str(interim)]) == 1
    row = next(line for line in interim.read_text().splitlines() if line.startswith("| [toy-gain]"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[-1] == "**runs missing**" and cells[5] == "—" and cells[3] != "—", cells


@pytest.mark.slow
def test_a_tuned_claim_shares_runs_and_selection_records_with_gradbench_tune(tmp_path, capsys):
    text = GOOD.split("[[claims]]")[0] + """
[[claims]]
id = "classify"
title = "dab beats ste"
quote = "+1%."
task = "classify"
a = "dab"
b = "ste"
metric = "accuracy"
gain = 1
[claims.cpu]
steps = 40
tune = "lr=1e-3,1e-2"
"""
    path = _write(tmp_path, text.replace('seeds = "0-2"', 'seeds = "2-3"\ntune_seeds = "0-1"'))
    assert main(["study", str(path), "--profile", "cpu", "--out", str(tmp_path / "c.md"), "--no-progress",
                 "--workers", "2"]) == 0
    sels = sorted((tmp_path / "runs" / "selections").glob("*.json"))
    assert len(sels) == 2
    report = (tmp_path / "c.md").read_text()
    assert "each side's settings tuned on validation over `lr=1e-3,1e-2`" in report
    for sel in sels:
        chosen = json.loads(sel.read_text())["choice"]["values"]["lr"]
        assert f"[lr={chosen}]" in report
    made = sorted((tmp_path / "runs").glob("classify/*/*.json"))
    # gradbench tune with the same settings finds every run made: the study used tune's own specs
    assert main(["tune", "--task", "classify", "--estimators", "dab,ste", "--grid", "lr=1e-3,1e-2", "--seeds", "0-1",
                 "--final-seeds", "2-3", "--steps", "40", "--grad-checkpoints", "0,1", "--grad-draws", "20",
                 "--device", "cpu", "--runs", str(tmp_path / "runs"), "--no-progress"]) == 0
    assert sorted((tmp_path / "runs").glob("classify/*/*.json")) == made
    assert sorted((tmp_path / "runs" / "selections").glob("*.json")) == sels


# ------------------------------------------------------------------------- ids across added keys


def test_a_task_key_added_later_keeps_the_older_records_id():
    spec = resolve("vae", "ste", seed=0, options=RunOptions(steps=10))
    assert len(spec.run_ids) == 3 and spec.run_ids[0] == spec.run_id  # iw_k, then protocol were added
    old = spec.as_dict()
    del old["task"]["config"]["iw_k"]  # as a record made before vimco added the key (and protocol came later)
    del old["task"]["config"]["protocol"]
    from gradbench import records

    old["run_id"] = records.run_id(old)
    old["eval_every"] = spec.eval_every
    assert old["run_id"] == spec.run_ids[2]
    assert spec_from_record(old).run_id == spec.run_id  # rerun rebuilds it
    # at iw_k=2 no record predates iw_k; one may predate protocol
    assert len(resolve("vae:iw_k=2", "ste", seed=0, options=RunOptions(steps=10)).run_ids) == 2
    assert len(resolve("vae:iw_k=2,protocol=disarm", "ste", seed=0, options=RunOptions(steps=10)).run_ids) == 1


def test_a_finished_record_under_the_older_id_is_reused(tmp_path):
    from gradbench import records
    from gradbench.runner import execute

    spec = resolve("classify", "ste", seed=0, options=RunOptions(steps=3, grad_stats=False))
    assert execute(spec, device="cpu", runs_dir=str(tmp_path))["status"] == "ok"
    new, *_, legacy = spec.record_paths(tmp_path)  # the oldest id: before every added key
    record = json.loads(new.read_text())  # made again as it was before the sort/rank/round keys existed
    for key in ("group", "levels"):
        del record["task"]["config"][key]
    record["run_id"] = legacy.stem
    records.atomic_write_json(legacy, record)
    new.unlink()
    assert todo(Grid([spec]), str(tmp_path), (0, 1))[:2] == ([], 1)
    assert spec.find_record(tmp_path).run_id == legacy.stem


def test_every_committed_record_rebuilds_to_its_id():
    paths = [p for p in glob.glob(str(ROOT / "results" / "*" / "*" / "*.json")) if "/selections/" not in p]
    assert len(paths) > 500
    bad, superseded = [], set()
    for p in paths:
        record = json.loads(Path(p).read_text())
        try:
            spec_from_record(record)
        except UsageError as e:
            est = record["estimator"]
            if f"made with estimator '{est['name']}' version {est['version']}; this gradbench has" in str(e):
                superseded.add((est["name"], est["version"]))  # a fixed estimator: its old records stay as made
            else:
                bad.append(str(e))
    assert not bad, bad[:3]
    # the only estimator versions that moved on since these records: relax 2 -> 3 (the variance objective's
    # direct path, issue 25); any other would be a version bump that no one decided on
    assert superseded <= {("relax", "2")}, superseded


# ------------------------------------------------------------------------------- failures and edges


def _judged(tmp_path, text, statuses_a, statuses_b=None):
    """Plan a toy study and judge it from records written by hand: A's and B's gap per seed and status."""
    from gradbench import records

    s = study.load_study(_write(tmp_path, text))
    p = study.plan(s, "cpu")
    claim = s.claims[0]
    for sp, statuses in zip(p.sides[claim.id], (statuses_a, statuses_b), strict=False):
        for spec, (status, gap) in zip(sp.finals, statuses, strict=True):
            rec = {**spec.as_dict(), "run_id": spec.run_id, "schema_version": records.SCHEMA_VERSION,
                   "status": status, "error": None if status == "ok" else "x", "eval_every": spec.eval_every,
                   "metrics": {"gap": {"value": gap, "higher_is_better": False}}, "main_metric": "gap"}
            path = spec.record_paths(tmp_path / "runs")[0]
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(rec))
    return study.judge_all(p)[claim.id]


def test_failures_count_against_their_side(tmp_path):
    level = GOOD.split("[[claims]]")[0] + "[[claims]]" + GOOD.split("[[claims]]")[2]
    # two good seeds would reach the level with a wide interval; the diverged third did not reach it
    res = _judged(tmp_path, level, [("ok", 4.0), ("ok", 6.0), ("diverged", None)])
    assert res.outcome == verdicts.NOT_SUPPORTED and res.notes
    gain = GOOD.split("[[claims]]")[0] + "[[claims]]" + GOOD.split("[[claims]]")[1]
    (tmp_path / "g").mkdir()
    res = _judged(tmp_path / "g", gain, [("ok", 1.0), ("ok", 1.1), ("diverged", None)],
                  [("ok", 3.0), ("ok", 3.1), ("ok", 3.05)])
    assert res.paired_seeds == [0, 1]
    assert res.outcome == verdicts.INCONCLUSIVE  # 2 paired seeds decide nothing; A's failure is unpaired


def test_a_tuned_claim_on_a_gradient_metric_is_judged_later_not_crashed(tmp_path):
    text = GOOD.split("[[claims]]")[0] + """[[claims]]
id = "snr"
title = "t"
quote = "q"
task = "classify"
a = "dab"
b = "ste"
metric = "gradient.snr"
[claims.cpu]
steps = 5
tune = "lr=1e-3,1e-2"
"""
    s = study.load_study(_write(tmp_path, text.replace('seeds = "0-2"', 'seeds = "0-2"\ntune_seeds = "3-4"')))
    p = study.plan(s, "cpu")
    assert study.missing(p).count > 0
    assert study.judge(p, s.claims[0]).outcome is None


def test_a_checkpoint_the_profile_does_not_measure_is_refused(tmp_path):
    path = _write(tmp_path, GOOD.replace('checkpoint = "start"', 'checkpoint = "middle"'))
    with pytest.raises(UsageError, match="checkpoint 'middle' is not one of profile 'cpu'"):
        study.plan(study.load_study(path), "cpu")


# ------------------------------------------------------------------------------- tuning in a study

TUNED = GOOD.split("[[claims]]")[0].replace('seeds = "0-2"', 'seeds = "0-1"\ntune_seeds = "2-3"') + """
[[claims]]
id = "recon"
title = "t"
quote = "q"
task = "autoencode"
a = "dab"
b = "gumbel"
metric = "test_recon"
gain = 10
[claims.cpu]
steps = 5
tune = "lr=3e-4,1e-3,3e-3,1e-2"
[[claims]]
id = "probe"
title = "t"
quote = "q"
task = "autoencode"
a = "dab"
b = "gumbel"
metric = "probe_accuracy"
gain = 10
[claims.cpu]
steps = 5
tune = "lr=3e-4,1e-3,3e-3,1e-2"
[[claims]]
id = "probe-on-recon"
title = "t"
quote = "q"
task = "autoencode"
a = "dab"
b = "gumbel"
metric = "probe_accuracy"
tune_metric = "recon"
gain = 10
[claims.cpu]
steps = 5
tune = "lr=3e-4,1e-3,3e-3,1e-2"
"""


def _fake_record(spec, runs, metrics: dict[str, tuple[float, bool]], status: str = "ok") -> None:
    """A finished record of ``spec`` with the given metrics (name -> (value, higher is better))."""
    from gradbench import records

    rec = {**spec.as_dict(), "run_id": spec.run_id, "schema_version": records.SCHEMA_VERSION, "status": status,
           "error": None if status == "ok" else "x", "eval_every": spec.eval_every,
           "metrics": {k: {"value": v, "higher_is_better": h} for k, (v, h) in metrics.items()},
           "main_metric": spec.task_cls.main_metric}
    path = spec.record_paths(runs)[0]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rec))


def test_each_claim_is_tuned_on_the_validation_version_of_its_own_metric(tmp_path):
    s = study.load_study(_write(tmp_path, TUNED))
    p = study.plan(s, "cpu")
    recon, probe, override = (p.sides[c][0].tuning for c in ("recon", "probe", "probe-on-recon"))
    assert (recon.metric, probe.metric, override.metric) == ("valid_recon", "valid_probe_accuracy", "valid_recon")
    # validation: reconstruction is best at 3e-3, the probe at 1e-3; test metrics say the opposite (never read)
    best_recon = {"3e-4": 20.0, "1e-3": 15.0, "3e-3": 12.0, "1e-2": 14.0}
    best_probe = {"3e-4": 0.70, "1e-3": 0.90, "3e-3": 0.75, "1e-2": 0.72}
    for tuning in (sp.tuning for sp in p.unique.values()):  # both sides of each claim
        for point, specs in zip(tuning.points, tuning.specs, strict=True):
            lr = point["lr"]
            for spec in specs:
                _fake_record(spec, tmp_path / "runs", {
                    "valid_recon": (best_recon[lr], False), "valid_probe_accuracy": (best_probe[lr], True),
                    "test_recon": (best_probe[lr] * 30, False), "probe_accuracy": (best_recon[lr] / 20, True)})
    todo = study.missing(p)
    assert recon.chosen == {"lr": "3e-3"} and override.chosen == {"lr": "3e-3"}
    assert probe.chosen == {"lr": "1e-3"}
    assert not recon.edge and not probe.edge
    # the finals are what is missing now: 2 seeds for each side's choice (recon's and probe-on-recon's shared)
    finals = {spec.run_id for sp in p.unique.values() for spec in sp.finals}
    assert {spec.run_id for spec in todo.runs} == finals and len(finals) == 2 * 2 * 2
    assert all(spec.seed in (0, 1) for spec in todo.runs)


def test_a_tuned_claim_needs_tuning_seeds(tmp_path):
    text = TUNED.replace('tune_seeds = "2-3"\n', "")
    with pytest.raises(UsageError, match="no tuning seeds"):
        study.plan(study.load_study(_write(tmp_path, text)), "cpu")


def test_a_study_grid_extends_past_an_edge_choice_and_lists_the_new_runs(tmp_path):
    text = TUNED.split("[[claims]]")[0] + "[[claims]]" + TUNED.split("[[claims]]")[1]
    p = study.plan(study.load_study(_write(tmp_path, text)), "cpu")
    tuning = p.sides["recon"][0].tuning
    for point, specs in zip(tuning.points, tuning.specs, strict=True):
        for spec in specs:  # reconstruction keeps improving with the learning rate: the choice is the largest
            _fake_record(spec, tmp_path / "runs", {"valid_recon": (1 / float(point["lr"]), False)})
    todo = study.missing(p)
    assert tuning.tried["lr"] == ["3e-4", "1e-3", "3e-3", "1e-2", "3e-2"] and not tuning.decided
    new = {spec.run_id for spec in tuning.specs[-1]}
    assert new <= {spec.run_id for spec in todo.runs}  # the extension's runs, made by the next (resumed) study
    assert any(sp is p.sides["recon"][0] for sp, _ in todo.unchosen)


def test_a_side_tuned_at_a_shorter_budget_is_reported_at_the_final_one_and_rechecked_there(tmp_path):
    text = TUNED.split("[[claims]]")[0] + "[[claims]]" + TUNED.split("[[claims]]")[1].replace(
        "steps = 5\n", "steps = 5\ntune_steps = 3\n")
    p = study.plan(study.load_study(_write(tmp_path, text)), "cpu")
    side = p.sides["recon"][0]
    tuning = side.tuning
    assert {spec.budget["steps"] for spec in tuning.runs} == {3}
    recon = {"3e-4": 20.0, "1e-3": 15.0, "3e-3": 12.0, "1e-2": 14.0}  # at 3 steps, 3e-3 is best
    for sp in p.unique.values():
        for point, specs in zip(sp.tuning.points, sp.tuning.specs, strict=True):
            for spec in specs:
                _fake_record(spec, tmp_path / "runs", {"valid_recon": (recon[point["lr"]], False)})
    todo = study.missing(p)
    assert tuning.chosen == {"lr": "3e-3"}
    assert {spec.budget["steps"] for spec in tuning.final} == {5} and [s.seed for s in tuning.final] == [0, 1]
    # the finals wait on the check: none is missing yet, and the side's final runs are not known
    assert side.finals == [] and side.pending and any(sp is side for sp, _ in todo.unchosen)
    assert side.waits_on == "its budget check"
    assert not {spec.run_id for spec in tuning.final} & {spec.run_id for spec in todo.runs}
    # the check: the choice and its two neighbours at the final budget, on the first tuning seed
    check = side.check
    assert [tuning.points[i]["lr"] for i, _ in check] == ["3e-3", "1e-3", "1e-2"]
    assert all(spec.seed == 2 and spec.budget["steps"] == 5 and not spec.grad for _, spec in check)
    assert {spec.run_id for _, spec in check} <= {spec.run_id for spec in todo.runs}
    assert study.budget_check(side).holds is None
    (_, chosen), *neighbours = check  # the choice alone at the final budget says nothing yet
    _fake_record(chosen, tmp_path / "runs", {"valid_recon": (1.0, False)})
    assert study.budget_check(side).holds is None and "not known yet" in study.budget_check(side).text()
    at_full = {"3e-3": 11.0, "1e-3": 9.0, "1e-2": 13.0}  # at 5 steps, 1e-3 is better: the choice does not hold
    for i, spec in check:
        _fake_record(spec, tmp_path / "runs", {"valid_recon": (at_full[tuning.points[i]["lr"]], False)})
    result = study.budget_check(side)
    assert result.holds is False and "does NOT hold: another setting is better there" in result.text()
    assert "tuned at 3 steps" in result.text()
    _fake_record(chosen, tmp_path / "runs", {}, status="failed")  # a choice that fails at the final budget
    failing = study.budget_check(side)
    assert failing.holds is False and "does NOT hold: it fails there" in failing.text()
    for i, spec in check:  # now the choice is best at the final budget too
        _fake_record(spec, tmp_path / "runs", {"valid_recon": ({"3e-3": 8.0}.get(tuning.points[i]["lr"], 9.0), False)})
    assert study.budget_check(side).holds is True
    study.missing(p)  # the check upholds the choice: its finals are what is missing now, and nothing re-tunes
    assert side.holds is True and side.retune is None and side.finals == tuning.final
    # the selection record keeps both budgets; its row goes to the final budget's table
    from gradbench.results import Selection

    sel = tuning.selection(p.profile.seeds, None, tmp_path / "runs")
    assert sel["budget"] == {"steps": 3} and sel["final_budget"] == {"steps": 5}
    # the check's runs are listed, and the tables set aside those not at the preset's setting, as grid runs
    assert sel["check"]["run_ids"] == [spec.run_id for _, spec in check] and sel["check"]["seed"] == 2
    from gradbench.results import RunSet

    shown = RunSet.collect(tmp_path / "runs").with_selections([Selection(sel)])
    aside = {r.run_id for r in shown.set_aside}
    assert {spec.run_id for i, spec in check if tuning.points[i]["lr"] != "1e-3"} <= aside
    assert Selection(sel).budget == {"steps": 5} and Selection(sel).tune_budget == {"steps": 3}
    assert study.judge(p, p.study.claims[0]).budget == {"steps": 5}


SHORTER = TUNED.split("[[claims]]")[0] + "[[claims]]" + TUNED.split("[[claims]]")[1].replace(
    "steps = 5\n", "steps = 5\ntune_steps = 3\n")


def _lr(spec) -> float:
    return float(getattr(spec.task_config, "lr", None) or spec.estimator_config.lr)


def _fake_valid(runs, values: dict[str, float], specs) -> None:
    """Records of ``specs`` whose validation (and test) reconstruction is ``values[lr]`` (lower is better)."""
    by_lr = {float(k): v for k, v in values.items()}
    for spec in specs:
        _fake_record(spec, runs, {"valid_recon": (by_lr[_lr(spec)], False), "test_recon": (by_lr[_lr(spec)], False)})


def test_a_choice_its_budget_check_does_not_uphold_is_re_tuned_at_the_final_budget(tmp_path):
    runs = tmp_path / "runs"
    p = study.plan(study.load_study(_write(tmp_path, SHORTER)), "cpu")
    side = p.sides["recon"][0]
    tuning = side.tuning
    short = {"3e-4": 20.0, "1e-3": 15.0, "3e-3": 12.0, "1e-2": 14.0}  # at 3 steps, 3e-3 is best
    _fake_valid(runs, short, [spec for sp in p.unique.values() for spec in sp.tuning.runs])
    study.missing(p)
    full = {"3e-4": 10.0, "1e-3": 9.0, "3e-3": 11.0, "1e-2": 13.0}  # at 5 steps, 1e-3 is best
    _fake_valid(runs, full, [spec for _, spec in side.check])
    todo = study.missing(p)
    # the check fails: the side is re-tuned at the final budget over the choice and its neighbours, on both
    # tuning seeds; the check's runs are the re-tuning's first seed's, so only the second seed's are missing
    assert side.holds is False and side.retune is not None and side.finals == [] and side.pending
    assert side.waits_on == "its re-tuning at the final budget"
    again = side.retune
    assert again.tried == {"lr": ["1e-3", "3e-3", "1e-2"]} and again.seeds == [2, 3]
    assert {spec.budget["steps"] for spec in again.runs} == {5} and not any(spec.grad for spec in again.runs)
    assert {spec.run_id for _, spec in side.check} == {specs[0].run_id for specs in again.specs}
    missing_ids = {spec.run_id for spec in todo.runs}
    assert {specs[1].run_id for specs in again.specs} <= missing_ids
    assert not {specs[0].run_id for specs in again.specs} & missing_ids
    assert not {spec.run_id for spec in tuning.final} & missing_ids  # the first choice's finals are never run
    _fake_valid(runs, full, [specs[1] for specs in again.specs])
    study.missing(p)  # 1e-3 is best, at the grid's low edge: the re-tuning extends to 3e-4 as any grid does
    assert again.tried["lr"] == ["3e-4", "1e-3", "3e-3", "1e-2"] and not again.decided
    _fake_valid(runs, full, again.specs[0])
    todo = study.missing(p)
    assert again.chosen == {"lr": "1e-3"} and side.chosen == {"lr": "1e-3"} and not side.pending
    assert [s.seed for s in side.finals] == [0, 1] and all(s.budget["steps"] == 5 for s in side.finals)
    assert {s.run_id for s in side.finals} <= {s.run_id for s in todo.runs}
    _fake_valid(runs, full, side.finals)
    # two selection records: the first names the re-tuning, which names it back and is the side's
    study.report_study(p)
    from gradbench.results import RunSet, Selection

    first = Selection(json.loads(next(Path(x) for x in (runs / "selections").glob("*.json")
                                      if "retuned" in json.loads(Path(x).read_text())).read_text()))
    assert Selection(side.selection).retune_of == first.data["id"] and first.retuned == side.selection["id"]
    assert first.check_holds is False and first.chosen == {"lr": "3e-3"}
    shown = RunSet.collect(runs).with_selections(Selection(s) for s in
                                                  [first.data, side.selection])
    rows = {label for table in shown.tables().values() for label in table}
    assert "dab [lr=1e-3]" in rows and "dab [lr=3e-3]" not in rows
    assert any("did not hold at 5 steps" in n for notes in shown.notes.values() for n in notes)
    # the report says so, and judges the re-tuned choice's runs
    verdict = study.judge(p, p.study.claims[0])
    assert verdict.sides[0].chosen == {"lr": "1e-3"} and set(verdict.sides[0].records) == {0, 1}
    text = study.retune_text(side)
    assert "re-tuned at 5 steps over lr ∈ {3e-4, 1e-3, 3e-3, 1e-2} on tuning seeds 2, 3" in text
    assert "chose lr=1e-3 (not lr=3e-3)" in text


def test_a_study_runs_finals_only_after_the_budget_check_upholds_the_choice(tmp_path):
    """``run_study`` goes in rounds, all sides together: grids; then budget checks; then the re-tuning of a
    side whose check failed (and its extension); then finals. No final run of a choice that does not hold."""
    runs = tmp_path / "runs"
    p = study.plan(study.load_study(_write(tmp_path, SHORTER)), "cpu")  # both sides fare alike
    full = {"3e-4": 10.0, "1e-3": 9.0, "3e-3": 11.0, "1e-2": 13.0}
    short = {"3e-4": 20.0, "1e-3": 15.0, "3e-3": 12.0, "1e-2": 14.0}
    rounds = []

    def sweep(grid, more=None):  # never asks for more: one round per call
        rounds.append([(spec.budget["steps"], spec.seed) for spec in grid.specs])
        for spec in grid.specs:
            _fake_valid(runs, short if spec.budget["steps"] == 3 else full, [spec])

    failed, todo = study.run_study(p, sweep)
    assert failed == 0 and todo.count == 0
    side = p.sides["recon"][0]
    assert side.chosen == {"lr": "1e-3"} and side.retune is not None
    # per side: grid 4 x 2 seeds; check 3; the re-tuning's second seed 3; its extension 1 x 2 seeds; finals 2
    assert [len(r) for r in rounds] == [16, 6, 6, 4, 4]
    assert {s for s, _ in rounds[0]} == {3} and all(s == 5 for r in rounds[1:] for s, _ in r)
    assert {seed for _, seed in rounds[-1]} == {0, 1}  # only the last round runs the final seeds
    assert not any(seed in (0, 1) for r in rounds[:-1] for _, seed in r)


def _two_worker_sweep(runs, valid, log, ask: bool):
    """A sweep that simulates two workers: a run takes its budget in steps as time (Gumbel's twice that, the
    slower side), its record appears when it ends, and ``more`` is asked whenever a worker is free and nothing
    is queued, as ``run_sweep`` asks it (``ask``; else one round per call). ``log`` gets (run id, start, end)."""
    clock = [0.0]

    def sweep(grid, more=None):
        queue, running = list(grid.specs), []
        while queue or running:
            while queue and len(running) < 2:
                spec = queue.pop(0)
                slow = 2 if spec.estimator_cls.name == "gumbel" else 1
                running.append((clock[0] + slow * spec.budget["steps"], spec, clock[0]))
            running.sort(key=lambda item: item[0])
            end, spec, start = running.pop(0)
            clock[0] = end
            valid([spec])
            log.append((spec.run_id, start, end))
            if ask and more is not None and not queue and len(running) < 2:
                queue += more({s.run_id for _, s, _ in running})
    return sweep


def test_a_study_decides_as_records_come_in_so_no_side_waits_on_another(tmp_path):
    """With a sweep that asks for more whenever a worker is free, DAB's finals (its choice held) start while
    Gumbel's re-tuning still runs, instead of waiting for the round's slowest run; every decision still waits
    on its own records (no final before its side's check and re-tuning have ended), and the study ends with
    the same choices and records as in rounds."""
    short = {"3e-4": 20.0, "1e-3": 15.0, "3e-3": 12.0, "1e-2": 14.0}  # at 3 steps, 3e-3 is best for both
    full = {"dab": {"3e-4": 10.0, "1e-3": 11.0, "3e-3": 9.0, "1e-2": 13.0},  # DAB's choice holds at 5 steps
            "gumbel": {"3e-4": 10.0, "1e-3": 9.0, "3e-3": 11.0, "1e-2": 13.0}}  # Gumbel's does not

    def valid(runs):
        def write(specs):
            for spec in specs:
                _fake_valid(runs, short if spec.budget["steps"] == 3 else full[spec.estimator_cls.name], [spec])
        return write

    made = {}
    for mode in ("rounds", "dynamic"):
        runs, log = tmp_path / mode / "runs", []
        (tmp_path / mode).mkdir()
        p = study.plan(study.load_study(_write(tmp_path / mode, SHORTER)), "cpu")
        failed, todo = study.run_study(p, _two_worker_sweep(runs, valid(runs), log, ask=mode == "dynamic"))
        assert failed == 0 and todo.count == 0
        dab, gumbel = p.sides["recon"]
        assert dab.holds is True and dab.retune is None and dab.chosen == {"lr": "3e-3"}
        assert gumbel.holds is False and gumbel.chosen == {"lr": "1e-3"}
        when = {run_id: (start, end) for run_id, start, end in log}
        assert len(when) == len(log)  # no run made twice
        for side, before in ((dab, [s for _, s in dab.check]), (gumbel, gumbel.retune.runs)):
            last = max(when[s.run_id][1] for s in before)
            assert all(when[s.run_id][0] >= last for s in side.finals), f"{mode}: a final before its decision"
        made[mode] = (sorted(when), max(end for _, _, end in log),
                      min(when[s.run_id][0] for s in dab.finals), max(when[s.run_id][1] for s in gumbel.retune.runs))
    assert made["dynamic"][0] == made["rounds"][0]  # the same runs
    _, total, dab_first_final, gumbel_retuned = made["dynamic"]
    assert dab_first_final < gumbel_retuned  # DAB's finals overlap Gumbel's re-tuning
    assert total < made["rounds"][1]  # and the study ends sooner


class _OneAtATime:
    """A two-worker executor whose runs end one at a time, in the order submitted (with ``_end_oldest`` as
    ``cf.wait``), so what ``run_sweep`` has in flight when it asks for more is known."""
    workers = 2

    def __init__(self):
        self.queue = []

    def submit(self, fn, *args):
        future = cf.Future()
        self.queue.append((future, fn, args))
        return future

    def end_oldest(self, futures, return_when=None):
        future, fn, args = self.queue.pop(0)
        try:
            future.set_result(fn(*args))
        except Exception as e:
            future.set_exception(e)
        return {future}, set(futures) - {future}

    def shutdown(self, cancel=False):
        pass


def _toy_sweep_setup(tmp_path, monkeypatch):
    """Six toy specs, a worker that writes a run's record at once, and a one-at-a-time executor."""
    from gradbench import sweep as sweep_mod

    runs = tmp_path / "runs"
    specs = [resolve("toy", "ste", preset="quick", seed=seed, options=RunOptions(steps=3)) for seed in range(6)]

    def run_group(spec_dicts, *args):
        done = []
        for d in spec_dicts:
            spec = next(s for s in specs if s.as_dict() == d)
            _fake_record(spec, runs, {"gap": (0.1, False)})
            done.append({"run_id": spec.run_id, "status": "ok", "error": None})
        return done

    executor = _OneAtATime()
    monkeypatch.setattr(sweep_mod, "_run_group", run_group)
    monkeypatch.setattr(cf, "wait", executor.end_oldest)
    return sweep_mod, runs, specs, executor


def test_run_sweep_asks_for_more_only_when_a_worker_is_free(tmp_path, monkeypatch):
    """``run_sweep`` asks ``more`` only when fewer runs are in flight than workers, tells it which, submits
    what it returns (a finished run skipped) and counts it in the result."""
    sweep_mod, runs, specs, executor = _toy_sweep_setup(tmp_path, monkeypatch)
    _fake_record(specs[3], runs, {"gap": (0.1, False)})  # finished before: skipped when more offers it
    asked = []

    def more(in_flight):
        asked.append(set(in_flight))
        return [specs[3:5], specs[5:]][len(asked) - 1] if len(asked) <= 2 else []

    result = sweep_mod.run_sweep(Grid(specs[:3]), str(runs), executor, device="cpu", progress=False, more=more)
    ids = [s.run_id for s in specs]
    # 0 ends with 1 and 2 queued: not asked; 1 ends: asked with 2 in flight; then 4 and 5 one by one
    assert asked == [{ids[2]}, {ids[4]}, {ids[5]}, set()]
    assert (result.total, result.ok, result.failed) == (5, 5, 0)
    assert all(s.find_record(runs) is not None for s in specs)


def test_run_sweep_stops_asking_when_more_raises_or_the_pool_dies(tmp_path, monkeypatch):
    """An error in ``more`` does not cancel the runs in flight: they end, then it is raised. A dead pool (a
    worker killed) is not asked for more: its runs count as failed and the sweep returns."""
    sweep_mod, runs, specs, executor = _toy_sweep_setup(tmp_path, monkeypatch)

    def broken(in_flight):
        raise RuntimeError("cannot decide")

    with pytest.raises(RuntimeError, match="cannot decide"):
        sweep_mod.run_sweep(Grid(specs[:3]), str(runs), executor, device="cpu", progress=False, more=broken)
    assert all(s.find_record(runs) is not None for s in specs[:3]) and specs[3].find_record(runs) is None
    asked = []

    def dead(spec_dicts, *args):
        raise cf.BrokenExecutor("a worker was killed")

    monkeypatch.setattr(sweep_mod, "_run_group", dead)
    result = sweep_mod.run_sweep(Grid(specs[3:5]), str(runs), executor, device="cpu", progress=False,
                                 more=lambda in_flight: [] if asked.append(in_flight) or len(asked) > 1 else specs[5:])
    assert (result.total, result.failed) == (2, 2) and asked == [] and specs[5].find_record(runs) is None
    assert all("worker died: a worker was killed" in e for e in result.errors)


def test_a_study_decides_nothing_while_a_retried_run_is_in_flight(tmp_path):
    """Two failed grid runs are retried first, together; when the quicker retry ends, nothing is decided
    while the other still runs (its failed record would be read), so every other run starts after both."""
    runs, log = tmp_path / "runs", []
    p = study.plan(study.load_study(_write(tmp_path, SHORTER)), "cpu")
    short = {"3e-4": 20.0, "1e-3": 15.0, "3e-3": 12.0, "1e-2": 14.0}
    grid = [spec for sp in p.unique.values() for spec in sp.tuning.runs]
    _fake_valid(runs, short, grid)
    broken = [spec for spec in grid if _lr(spec) == 3e-3 and spec.seed == 2]
    assert {spec.estimator_cls.name for spec in broken} == {"dab", "gumbel"}  # Gumbel's retry is the slower
    for spec in broken:
        _fake_record(spec, runs, {}, status="failed")

    def valid(specs):
        for spec in specs:
            _fake_valid(runs, short if spec.budget["steps"] == 3 else {k: v - 5 for k, v in short.items()}, [spec])

    failed, todo = study.run_study(p, _two_worker_sweep(runs, valid, log, ask=True))
    assert failed == 0 and todo.count == 0
    retried = {spec.run_id for spec in broken}
    assert {run_id for run_id, _, _ in log[:2]} == retried
    last_retry = max(end for run_id, _, end in log if run_id in retried)
    assert all(start >= last_retry for run_id, start, _ in log if run_id not in retried)


def test_a_resumed_study_retries_a_failed_run_before_deciding_on_it(tmp_path):
    """A grid run that failed in an earlier invocation is retried first; the choice, its check and its
    finals follow the retried result, and no final run is made for the choice the failure implied."""
    runs = tmp_path / "runs"
    p = study.plan(study.load_study(_write(tmp_path, SHORTER)), "cpu")
    short = {"3e-4": 20.0, "1e-3": 15.0, "3e-3": 12.0, "1e-2": 14.0}  # at 3 steps, 3e-3 is best
    full = {"3e-4": 10.0, "1e-3": 11.0, "3e-3": 9.0, "1e-2": 13.0}  # and still best at 5 steps: holds
    grid = [spec for sp in p.unique.values() for spec in sp.tuning.runs]
    _fake_valid(runs, short, grid)
    broken = [spec for spec in grid if _lr(spec) == 3e-3 and spec.seed == 2]
    for spec in broken:  # 3e-3 failed on seed 2: as recorded, 1e-2 would win and be checked and run
        _fake_record(spec, runs, {}, status="failed")
    rounds = []

    def sweep(g, more=None):
        rounds.append(sorted((_lr(spec), spec.budget["steps"], spec.seed) for spec in g.specs))
        for spec in g.specs:
            _fake_valid(runs, short if spec.budget["steps"] == 3 else full, [spec])

    failed, todo = study.run_study(p, sweep)
    assert failed == 0 and todo.count == 0
    assert rounds[0] == sorted((3e-3, 3, 2) for _ in broken)  # the failed runs, retried alone first
    assert all(sp.chosen == {"lr": "3e-3"} and sp.holds is True and sp.retune is None for sp in p.sides["recon"])
    made = {(lr, seed) for r in rounds for lr, steps, seed in r if steps == 5 and seed in (0, 1)}
    assert made == {(3e-3, 0), (3e-3, 1)}  # only the choice's finals; none of 1e-2's


def test_the_leaderboard_shows_one_tuned_row_per_side_whatever_its_selection_records_say(tmp_path):
    """A choice whose check failed is not shown while its re-tuning is undecided; a re-tuning that its first
    tuning no longer names is not shown either; a re-tuning that re-chooses the first setting shares its
    finals."""
    from gradbench.results import RunSet, Selection

    runs = tmp_path / "runs"
    p = study.plan(study.load_study(_write(tmp_path, SHORTER)), "cpu")
    side = p.sides["recon"][0]
    short = {"3e-4": 20.0, "1e-3": 15.0, "3e-3": 12.0, "1e-2": 14.0}
    _fake_valid(runs, short, [spec for sp in p.unique.values() for spec in sp.tuning.runs])
    study.missing(p)
    _fake_valid(runs, {"3e-4": 9.0, "1e-3": 9.5, "3e-3": 10.0, "1e-2": 13.0}, [s for _, s in side.check])
    study.missing(p)
    first = side.tuning.selection(p.profile.seeds, None, runs)
    first["check"]["holds"] = False
    _fake_valid(runs, short, side.tuning.final)  # finals of the first choice, made before the rule
    shown = RunSet.collect(runs).with_selections([Selection(first)])
    assert not any(label.startswith("dab [") for t in shown.tables().values() for label in t)
    assert any("is to be re-tuned at the final budget" in n for ns in shown.notes.values() for n in ns)
    # a re-tuning record its first tuning does not name: set aside with a note
    again = {**first, "id": "stale", "retune_of": "other", "check": None}
    shown = RunSet.collect(runs).with_selections([Selection(again)])
    assert not any(label.startswith("dab [") for t in shown.tables().values() for label in t)
    assert any("no longer asks for it" in n for ns in shown.notes.values() for n in ns)
    # the re-tuning chooses the first setting again: one row, the same final runs, none set aside
    again = {**first, "id": "again", "retune_of": first["id"], "check": None}
    named = {**first, "retuned": "again"}
    shown = RunSet.collect(runs).with_selections([Selection(named), Selection(again)])
    rows = [label for t in shown.tables().values() for label in t if label.startswith("dab [")]
    assert rows == ["dab [lr=3e-3]"]
    finals = {s.run_id for s in side.tuning.final}
    assert not finals & {r.run_id for r in shown.set_aside}


def test_a_re_tuning_keeps_every_value_of_a_key_it_cannot_extend(tmp_path):
    text = SHORTER.replace('tune = "lr=3e-4,1e-3,3e-3,1e-2"', 'tune = "lr=1e-3,3e-3,1e-2,hidden=8,16,32"', 1)
    p = study.plan(study.load_study(_write(tmp_path, text)), "cpu")
    side = p.sides["recon"][0]
    side.tuning.choice, side.tuning.rows = side.tuning.points.index({"lr": "3e-3", "hidden": "16"}), []
    again = study.retune(side)
    assert again.tried == {"lr": ["1e-3", "3e-3", "1e-2"], "hidden": ["8", "16", "32"]}
    assert {spec.run_id for _, spec in side.check} <= {specs[0].run_id for specs in again.specs}


@pytest.mark.parametrize("extra,message", [
    ("tune_steps = 9\n", "'tune_steps' \\(9\\) is not shorter than the final budget"),
    ("tune_steps = 5\n", "'tune_steps' \\(5\\) is not shorter than the final budget.*leave 'tune_steps' out"),
    ("tune_steps = 0\n", "'tune_steps' must be a positive integer"),
    ("tune_evals = 3\n", "'tune_evals' is a shorter tuning budget: it needs 'tune' and a final budget of 'evals'"),
])
def test_bad_tuning_budgets_are_refused(tmp_path, extra, message):
    text = TUNED.replace("steps = 5\n", "steps = 5\n" + extra, 1)
    with pytest.raises(UsageError, match=message):
        study.load_study(_write(tmp_path, text))


def test_a_claim_can_report_at_its_own_seeds_disjoint_from_the_tuning_seeds(tmp_path):
    text = TUNED.replace("steps = 5\n", "steps = 5\nseeds = \"4-6\"\n", 1)
    p = study.plan(study.load_study(_write(tmp_path, text)), "cpu")
    side = p.sides["recon"][0]
    assert side.final_seeds == [4, 5, 6] and p.sides["probe"][0].final_seeds == [0, 1]
    for point, specs in zip(side.tuning.points, side.tuning.specs, strict=True):
        for spec in specs:
            _fake_record(spec, tmp_path / "runs", {"valid_recon": (abs(float(point["lr"]) - 3e-3), False)})
    study.missing(p)
    assert [spec.seed for spec in side.finals] == [4, 5, 6]
    with pytest.raises(UsageError, match="'seeds' and the profile's tune_seeds share seed\\(s\\) 3"):
        study.load_study(_write(tmp_path, TUNED.replace("steps = 5\n", "steps = 5\nseeds = \"3-6\"\n", 1)))


def test_two_profiles_in_one_report_side_by_side(tmp_path, capsys):
    text = GOOD.replace("[[claims]]", "[profiles.long]\npreset = \"quick\"\nseeds = \"0-1\"\ndevice = \"cpu\"\n"
                        "grad_checkpoints = [0.0, 1.0]\ngrad_draws = 20\n[[claims]]", 1)
    text = text.replace("[claims.cpu]\nsteps = 60\n", "[claims.cpu]\nsteps = 60\n[claims.long]\nsteps = 80\n")
    path = _write(tmp_path, text)
    assert main(["study", str(path), "--profile", "cpu,long", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "t (cpu): 9 run(s) missing" in out and "t (long): 6 run(s) missing" in out
    report = tmp_path / "claims.md"
    assert main(["study", str(path), "--profile", "cpu,long", "--out", str(report), "--no-progress"]) == 0
    text = report.read_text()
    assert "## Verdicts side by side" in text and "## Profile `cpu`" in text and "## Profile `long`" in text
    for cid in ("toy-gain", "toy-level", "toy-variance"):
        for profile in ("cpu", "long"):  # each claim once per profile, its anchor and figure suffixed
            assert f"### {cid} ({profile})" in text and f"(#{cid}-{profile})" in text
        assert (tmp_path / "claims-figures" / f"{cid}-cpu.png").exists()
    assert "60 steps" in text.split("## Profile `long`")[0]
    assert "80 steps" in text.split("## Profile `long`")[1]
    # the one-profile report of the same records is what it was: no suffixes
    assert main(["study", str(path), "--profile", "cpu", "--out", str(tmp_path / "one.md"), "--no-progress"]) == 0
    one = (tmp_path / "one.md").read_text()
    assert "## toy-gain" in one and "(#toy-gain)" in one and "side by side" not in one
    assert main(["study", str(path), "--profile", "cpu,cpu", "--dry-run"]) == 2
    assert "each once" in capsys.readouterr().err


def test_a_claim_can_run_at_its_own_preset(tmp_path):
    text = GOOD.replace("[claims.cpu]\nsteps = 60\n", "[claims.cpu]\nsteps = 60\npreset = \"paper\"\n", 1)
    p = study.plan(study.load_study(_write(tmp_path, text)), "cpu")
    assert {s.preset for s in p.sides["toy-gain"][0].runs} == {"paper"}
    assert {s.preset for s in p.sides["toy-level"][0].runs} == {"quick"}
    assert study.judge(p, p.study.claims[0]).preset == "paper"
    bad = GOOD.replace("[claims.cpu]\nsteps = 60\n", "[claims.cpu]\nsteps = 60\npreset = \"huge\"\n", 1)
    with pytest.raises(UsageError, match="huge"):
        study.plan(study.load_study(_write(tmp_path, bad)), "cpu")


def test_claims_option_runs_a_subset_and_names_an_unknown_id(tmp_path, capsys):
    path = _write(tmp_path, GOOD)
    assert main(["study", str(path), "--profile", "cpu", "--claims", "toy-gain", "--dry-run"]) == 0
    assert "6 run(s) missing" in capsys.readouterr().out  # reinforce and ste at 3 seeds
    assert main(["study", str(path), "--profile", "cpu", "--claims", "toy-gain,nope", "--dry-run"]) == 2
    assert "no claim 'nope' (known: toy-gain, toy-level, toy-variance)" in capsys.readouterr().err


def test_a_claim_not_run_yet_names_its_data_from_the_preset(tmp_path):
    """Before any record exists the report's data column comes from the task's config at the claim's
    preset (Fashion-MNIST at the full profile's paper preset), not "synthetic"."""
    from gradbench import claims

    s = study.load_study(Path(__file__).resolve().parents[1] / "studies" / "dab-claims.toml")
    p = study.plan(s, "full", runs=str(tmp_path / "empty"))
    judged = study.judge_all(p)
    by_id = {c.id: c for c in s.claims}
    assert claims._dataset(by_id["density-elbo"], judged["density-elbo"]) == "Fashion-MNIST 28x28"
    assert claims._dataset(by_id["represent-recon"], judged["represent-recon"]) == "Fashion-MNIST 28x28"
    assert claims._dataset(by_id["sort-level"], judged["sort-level"]) == "synthetic (`sort:length=10`)"
