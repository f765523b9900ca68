"""compare: the paired comparison over shared seeds, and records found under the registry's current label."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from scipy import stats as sp

from gradbench import records
from gradbench.compare import compare, estimator_label, format_comparison, registry_label
from gradbench.errors import UsageError


def _record(name: str, label: str, config: dict[str, Any] | None, seed: int, gap: float | None,
            status: str = "ok") -> dict[str, Any]:
    return {
        "schema_version": 1, "run_id": f"{label}-{seed}", "status": status,
        "error": None if status == "ok" else f"{status} at step 50",
        "task": {"name": "toy", "version": "1", "config": {}, "label": "toy", "node": {"kind": "bernoulli"}},
        "estimator": {"name": name, "version": "1", "config": config, "label": label, "unbiased": False},
        "preset": "quick", "seed": seed, "budget": {"steps": 100},
        "metrics": {"gap": {"value": gap, "higher_is_better": False}}, "main_metric": "gap",
        "gradient": {}, "cost": {"steps_per_s": 100.0}, "provenance": {"end_utc": "2026-01-01T00:00:00Z"},
    }


def _save(runs: Path, rec: dict[str, Any]) -> None:
    rid = hashlib.sha256(rec["run_id"].encode()).hexdigest()[:12]
    records.atomic_write_json(records.record_path(runs, "toy", rec["estimator"]["name"], rid), rec)


def test_registry_label_uses_todays_rule_and_falls_back() -> None:
    def rec(name: str, label: str, config: Any) -> dict[str, Any]:
        return {"estimator": {"name": name, "label": label, "config": config}}

    assert registry_label(rec("ste", "ste(variant=identity)", {"variant": "identity"})) == estimator_label("ste")
    assert registry_label(rec("ste", "x", {"variant": "clipped"})) == estimator_label("ste:variant=clipped")
    assert registry_label(rec("no_such_estimator", "mine(k=2)", {"k": 2})) == "mine(k=2)"  # unknown class
    assert registry_label(rec("ste", "ste(old=1)", {"old": 1})) == "ste(old=1)"  # unknown key
    assert registry_label(rec("ste", "ste(variant=identity)", None)) == "ste(variant=identity)"  # no config


def test_compare_finds_records_stored_under_an_old_label(tmp_path: Path) -> None:
    old_label = "ste(variant=identity)"  # the label rule before straight-through's default label became "ste"
    a_vals, b_vals = [0.30, 0.34, 0.29, 0.33], [0.50, 0.51, 0.47, 0.52]
    for seed, (va, vb) in enumerate(zip(a_vals, b_vals, strict=True)):
        _save(tmp_path, _record("gumbel", estimator_label("gumbel"), {}, seed, va))
        _save(tmp_path, _record("ste", old_label, {"variant": "identity"}, seed, vb))
    result = compare(str(tmp_path), "toy", "gumbel", "ste")
    assert result["b"] == estimator_label("ste") and result["seeds"] == [0, 1, 2, 3]
    (gap,) = result["rows"]
    assert gap["p"] == pytest.approx(sp.ttest_rel(a_vals, b_vals).pvalue, rel=1e-12)
    assert gap["diff"] == pytest.approx(sum(a_vals) / 4 - sum(b_vals) / 4)
    assert gap["gain_pct"] > 0  # lower gap is better and A's is lower


def test_compare_identical_runs_p_one(tmp_path: Path) -> None:
    for seed in range(3):
        _save(tmp_path, _record("gumbel", estimator_label("gumbel"), {}, seed, 0.1 * seed))
        _save(tmp_path, _record("ste", "ste", {"variant": "identity"}, seed, 0.1 * seed))
    (gap,) = compare(str(tmp_path), "toy", "gumbel", "ste")["rows"]
    assert (gap["p"], gap["diff"], gap["ci"]) == (1.0, 0.0, 0.0)
    with pytest.raises(UsageError, match=">= 2 seeds"):
        compare(str(tmp_path), "toy", "gumbel", "ste:variant=clipped")


def test_failed_and_diverged_seeds_are_listed_and_excluded_from_the_pairing(tmp_path: Path) -> None:
    a_vals, b_vals = [0.30, 0.34, 0.29, 0.33, None], [0.50, 0.51, 0.47, None, 0.52]
    for seed, (va, vb) in enumerate(zip(a_vals, b_vals, strict=True)):
        _save(tmp_path, _record("gumbel", estimator_label("gumbel"), {}, seed, va,
                                status="ok" if va is not None else "diverged"))
        _save(tmp_path, _record("ste", "ste", {"variant": "identity"}, seed, vb,
                                status="ok" if vb is not None else "failed"))
    _save(tmp_path, _record("ste", "ste", {"variant": "identity"}, 7, None, status="failed"))  # A never ran seed 7
    result = compare(str(tmp_path), "toy", "gumbel", "ste")
    assert result["seeds"] == [0, 1, 2]
    assert [(e["seed"], e["a"], e["b"]) for e in result["excluded"]] == [
        (3, "ok", "failed"), (4, "diverged", "ok"), (7, "not run", "failed")]
    assert result["excluded"][1]["error_a"] == "diverged at step 50"
    assert result["runs"] == {"a": {"ok": 4, "diverged": 1}, "b": {"ok": 4, "failed": 2}}
    assert "excluded from the pairing" in result["excluded_note"]
    (gap,) = result["rows"]
    assert gap["p"] == pytest.approx(sp.ttest_rel(a_vals[:3], b_vals[:3]).pvalue, rel=1e-12)
    json.dumps(result)  # the --json output carries the same
    text = format_comparison(result)
    assert "3 seed(s) excluded: see below" in text
    assert "seed 3 (A ok, B failed), seed 4 (A diverged, B ok), seed 7 (A not run, B failed)" in text
    assert "excluded from the pairing" in text


def test_no_exclusions_say_nothing(tmp_path: Path) -> None:
    for seed in range(2):
        _save(tmp_path, _record("gumbel", estimator_label("gumbel"), {}, seed, 0.1 + seed))
        _save(tmp_path, _record("ste", "ste", {"variant": "identity"}, seed, 0.3 + seed / 2))
    result = compare(str(tmp_path), "toy", "gumbel", "ste")
    assert result["excluded"] == [] and result["excluded_note"] is None
    assert "xcluded" not in format_comparison(result)


def test_too_few_finished_seeds_names_the_failures(tmp_path: Path) -> None:
    for seed in range(3):
        _save(tmp_path, _record("gumbel", estimator_label("gumbel"), {}, seed, 0.1,
                                status="ok" if seed == 0 else "diverged"))
        _save(tmp_path, _record("ste", "ste", {"variant": "identity"}, seed, 0.3))
    with pytest.raises(UsageError, match=r"failed or diverged: seed 1 \(A diverged, B ok\)"):
        compare(str(tmp_path), "toy", "gumbel", "ste")
