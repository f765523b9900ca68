"""``NAME:key=value,...`` specs and their coercion into frozen Config dataclasses.

Configs are frozen dataclasses validated in ``__post_init__``; values from the command line are
strings, converted through the field's type hint. Every error is a one-line UsageError that names
the key and the valid ones.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from typing import Any, Literal, Union, get_args, get_origin

from gradbench.errors import UsageError

_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def did_you_mean(word: str, options: Any) -> str:
    """``"; did you mean 'tau'?"`` for the closest of ``options`` (difflib, as the registry does), else ``""``."""
    close = difflib.get_close_matches(word, [str(o) for o in options], n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def parse_spec(spec: str) -> tuple[str, dict[str, str]]:
    """``"dab:gamma=5,hidden=64"`` -> ``("dab", {"gamma": "5", "hidden": "64"})``."""
    name, _, rest = spec.partition(":")
    name = name.strip()
    if not name:
        raise UsageError(f"empty name in spec {spec!r}; expected NAME or NAME:key=value,...")
    if "=" in name:  # "gumbel,tau=0.5": settings without the colon that starts them
        head, sep, tail = name.partition(",")
        fixed = f"{head.strip()}:{tail.strip()}" + (f",{rest}" if rest else "")
        hint = f"; did you mean {fixed!r}?" if sep and head.strip() and "=" not in head else ""
        raise UsageError(f"settings need a colon after the name: bad spec {spec!r}{hint} "
                         f"(expected NAME or NAME:key=value,...)")
    pairs: dict[str, str] = {}
    for item in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise UsageError(f"bad setting {item!r} in {spec!r}; expected key=value")
        if key.strip() in pairs:
            raise UsageError(f"key {key.strip()!r} given twice in {spec!r}")
        pairs[key.strip()] = value.strip()
    return name, pairs


def _coerce(value: Any, hint: Any, key: str, owner: str) -> Any:
    """``value`` (a string from the command line, or typed) as the field's type ``hint``."""
    origin = get_origin(hint)
    if origin is Union or str(origin) == "<class 'types.UnionType'>":
        return _coerce_union(value, get_args(hint), key, owner)
    if origin is Literal:
        return _coerce_choice(value, get_args(hint), key, owner)
    if hint is bool:
        return _coerce_bool(value, key, owner)
    if hint in (int, float, str):
        return _coerce_scalar(value, hint, key, owner)
    return value


def _coerce_union(value: Any, args: tuple[Any, ...], key: str, owner: str) -> Any:
    if type(None) in args and (value is None or (isinstance(value, str) and value.lower() == "none")):
        return None
    errors = []
    for arg in (a for a in args if a is not type(None)):
        try:
            return _coerce(value, arg, key, owner)
        except UsageError as e:
            errors.append(str(e))
    raise UsageError(errors[0] if errors else f"{owner}: bad value {value!r} for {key}")


def _coerce_choice(value: Any, choices: tuple[Any, ...], key: str, owner: str) -> Any:
    for c in choices:
        if value == c or (isinstance(value, str) and value == str(c)):
            return c
    raise UsageError(f"{owner}: bad value {value!r} for {key}; choose one of {', '.join(map(str, choices))}")


def _coerce_bool(value: Any, key: str, owner: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
        return value.lower() in _TRUE
    raise UsageError(f"{owner}: bad value {value!r} for {key} (expected true/false)")


def _coerce_scalar(value: Any, hint: type, key: str, owner: str) -> Any:
    bad = UsageError(f"{owner}: bad value {value!r} for {key} (expected {hint.__name__})")
    if isinstance(value, bool) and hint is not str:
        raise bad
    try:
        if hint is int and isinstance(value, float) and not value.is_integer():
            raise ValueError
        if hint is int and isinstance(value, str):
            return int(float(value)) if _is_integral(value) else int(value)
        return hint(value)
    except (TypeError, ValueError):
        raise bad from None


def _is_integral(text: str) -> bool:
    try:
        f = float(text)
    except ValueError:
        return False
    return f.is_integer() and ("e" in text.lower() or "." in text)


def build_config(cls: type, values: dict[str, Any] | None, owner: str, base: Any = None) -> Any:
    """Instantiate ``cls`` (a dataclass) from ``values`` (strings or typed), on top of ``base``."""
    values = dict(values or {})
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [k for k in values if k not in fields]
    if unknown:
        valid = ", ".join(fields) or "none"
        hint = did_you_mean(unknown[0], fields)
        raise UsageError(f"{owner}: unknown config key {unknown[0]!r}{hint} (valid keys: {valid})")
    hints = typing.get_type_hints(cls)
    coerced = {k: _coerce(v, hints[k], k, owner) for k, v in values.items()}
    try:
        if base is not None:
            return dataclasses.replace(base, **coerced)
        return cls(**coerced)
    except (TypeError, ValueError) as e:
        raise UsageError(f"{owner}: {e}") from None


def config_dict(config: Any) -> dict[str, Any]:
    """A config as a plain JSON-able dict (tuples become lists)."""
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(config).items()}


def non_default(config: Any, reference: Any = None) -> dict[str, Any]:
    """The fields of ``config`` that differ from ``reference`` (default: the class defaults)."""
    ref = reference if reference is not None else type(config)()
    a, b = config_dict(config), config_dict(ref)
    return {k: v for k, v in a.items() if b.get(k) != v}


def format_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def label(name: str, changed: dict[str, Any]) -> str:
    """Display name showing only non-default values: ``gumbel(tau=0.5, hard=true)``."""
    if not changed:
        return name
    return f"{name}({', '.join(f'{k}={format_value(v)}' for k, v in changed.items())})"
