"""A run's budget: how long it trains (``steps``, ``seconds``, or cost evaluations per example, ``evals``)
and, when not constant, its learning-rate schedule. One checker (for command-line options and study files
alike), one constructor (``make_budget``, what a record stores) and one formatter (``budget_text``,
``budget_words``) for every writer and reader. No torch, no registry: the results layer uses it too.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from numbers import Real
from typing import Any

from gradbench.errors import UsageError

KINDS = ("steps", "seconds", "evals")  # what a budget counts; a run has exactly one
LR_SCHEDULES = ("constant", "cosine")


def _flag(key: str) -> str:
    return f"--{key}"


def check_budget(values: Mapping[str, Any], name: Callable[[str], str] = _flag) -> None:
    """A one-line UsageError unless ``values`` gives at most one of ``KINDS``, each positive (``steps`` and
    ``evals`` whole numbers). ``name`` says how a key is called where it was given (``--steps``; a study
    file's ``'steps'``)."""
    given = [k for k in KINDS if values.get(k) is not None]
    if len(given) > 1:
        raise UsageError(f"give one budget: {', '.join(map(name, KINDS[:-1]))} or {name(KINDS[-1])}, not "
                         f"{' and '.join(map(name, given))}")
    for key in given:
        value = values[key]
        whole = key != "seconds"
        if isinstance(value, bool) or not isinstance(value, Real) or (whole and not float(value).is_integer()):
            raise UsageError(f"{name(key)} must be {'a whole number' if whole else 'a number'}, got {value!r}")
        if whole and value < 1:
            raise UsageError(f"{name(key)} must be >= 1, got {value}")
        if not whole and not value > 0:
            raise UsageError(f"{name(key)} must be > 0, got {value}")


def make_budget(steps: int | None = None, seconds: float | None = None, evals: int | None = None,
                lr_schedule: str = "constant", default_steps: int | None = None) -> dict[str, Any]:
    """The budget a run spec and its record hold: ``{"steps": N}`` (``default_steps`` when none is given),
    ``{"seconds": S}`` or ``{"evals": E}``, plus ``"lr_schedule"`` when it is not constant (so constant runs
    keep their ids). An ``evals`` budget gives each estimator as many steps as its cost evaluations per step
    allow, so one that evaluates the cost twice per step trains half as many steps."""
    check_budget({"steps": steps, "seconds": seconds, "evals": evals})
    budget: dict[str, Any] = ({"seconds": float(seconds)} if seconds is not None
                              else {"evals": int(evals)} if evals is not None
                              else {"steps": int(steps or default_steps or 0)})
    if lr_schedule not in LR_SCHEDULES:
        raise UsageError(f"unknown --lr-schedule {lr_schedule!r}; use one of {', '.join(LR_SCHEDULES)}")
    if lr_schedule != "constant":
        if seconds is not None:
            raise UsageError(f"--lr-schedule {lr_schedule} needs a --steps or --evals budget (its length "
                             f"must be known)")
        budget["lr_schedule"] = lr_schedule
    return budget


def budget_text(budget: Any) -> str:
    """``steps=2000`` / ``lr_schedule=cosine, steps=2000``: a budget as its keys and values (the tables' and
    the plots' file names' form); ``no budget`` for an empty one, anything else as it prints."""
    if isinstance(budget, Mapping):
        return ", ".join(f"{k}={v}" for k, v in budget.items()) or "no budget"
    return str(budget)


def budget_words(budget: Mapping[str, Any]) -> str:
    """``2000 steps`` / ``2000 steps, lr_schedule cosine``: a budget in words (the claims report's form)."""
    return ", ".join(f"{v:g} {k}" if isinstance(v, (int, float)) else f"{k} {v}" for k, v in budget.items())
