"""``--config FILE.toml`` for ``run``, ``sweep`` and ``tune``: the command's options from a file.

The file's keys are the command's long flags without their dashes (``steps = 1000``,
``estimator = "dab:gamma=5"``, ``grad_checkpoints = [0, 1]``; ``grad-checkpoints`` works too), with the
values the flags take. They become the subcommand's defaults, so a flag on the command line overrides
its key; a flag that excludes another (``--evals`` and the file's ``steps``, ``--seed`` and the file's
``seeds``) replaces it. An unknown key or a value of the wrong type is a one-line UsageError naming the
file, before anything runs. Paths in the file (``runs``, ``plugin``) are relative to the current folder,
as on the command line.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from gradbench.config import did_you_mean
from gradbench.errors import UsageError

OPTION = "--config"
LIST_KEYS = {"tasks", "estimators", "seeds", "final_seeds", "grid"}  # comma-separated on the command line


def config_path(argv: Sequence[str]) -> str | None:
    """The value of the last ``--config`` in ``argv`` (before a ``--``), or None."""
    found = None
    for i, arg in enumerate(argv):
        if arg == "--":
            break
        if arg == OPTION and i + 1 < len(argv):
            found = argv[i + 1]
        elif arg.startswith(OPTION + "="):
            found = arg.partition("=")[2]
    return found


def apply(parser: argparse.ArgumentParser, argv: Sequence[str]) -> None:
    """When ``argv`` names a ``--config`` file, make its values the chosen subcommand's defaults."""
    path = config_path(argv)
    if path is None:
        return
    sub = _subcommand(parser, argv)
    if sub is None or not any(OPTION in a.option_strings for a in sub._actions):
        return  # argparse answers with its own one-line error ("unrecognized arguments: --config")
    values = _values(path, sub, _read(path))
    given = _given(sub, argv)
    for group in sub._mutually_exclusive_groups:
        dests = [a.dest for a in group._group_actions]
        in_file = [d for d in dests if d in values]
        if len(in_file) > 1:
            raise UsageError(f"{path}: give one of {', '.join(dests)}, not {' and '.join(in_file)}")
        if any(d in given for d in dests):  # the command line's choice replaces the file's
            for d in in_file:
                values.pop(d)
    for action in sub._actions:
        if action.dest in values:
            action.required = False
    sub.set_defaults(**values)


def _values(path: str, sub: argparse.ArgumentParser, data: dict[str, Any]) -> dict[str, Any]:
    """dest -> value, for each key of the file; a one-line UsageError for an unknown key or a bad value."""
    keys = _keys(sub)
    values: dict[str, Any] = {}
    for key, value in data.items():
        action = keys.get(key.replace("-", "_"))
        if action is None:
            valid = sorted(keys)
            raise UsageError(f"{path}: unknown key {key!r}{did_you_mean(key.replace('-', '_'), valid)} "
                             f"(keys are the long flags of gradbench {sub.prog.split()[-1]}: {', '.join(valid)})")
        if action.dest in values:
            raise UsageError(f"{path}: {action.dest!r} given twice (as {key!r})")
        values[action.dest] = _value(path, key, value, action)
    return values


def _subcommand(parser: argparse.ArgumentParser, argv: Sequence[str]) -> argparse.ArgumentParser | None:
    choices = next((a.choices for a in parser._actions if isinstance(a, argparse._SubParsersAction)), {})
    command = next((arg for arg in argv if not arg.startswith("-")), None)
    return choices.get(command) if command else None


def _keys(sub: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """Key (a long flag without its dashes, ``-`` as ``_``) -> its action."""
    keys = {}
    for action in sub._actions:
        if isinstance(action, argparse._HelpAction) or OPTION in action.option_strings:
            continue
        for flag in action.option_strings:
            if flag.startswith("--"):
                keys[flag[2:].replace("-", "_")] = action
    return keys


def _read(path: str) -> dict[str, Any]:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise UsageError(f"no config file {path!r}") from None
    except IsADirectoryError:
        raise UsageError(f"--config {path!r} is a folder; pass a TOML file") from None
    except OSError as e:
        raise UsageError(f"cannot read config file {path!r}: {e.strerror or e}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise UsageError(f"{path}: not valid TOML: {e}") from None


def _value(path: str, key: str, value: Any, action: argparse.Action) -> Any:
    """The file's ``value`` as the flag would give it, or a one-line UsageError."""
    if isinstance(action, argparse._StoreTrueAction):
        kind, converted = "true or false", value if isinstance(value, bool) else None
    elif isinstance(action, argparse._AppendAction):
        items = value if isinstance(value, list) else [value]
        kind = "a string or a list of strings"
        converted = list(items) if all(isinstance(v, str) for v in items) else None
    elif action.type in (int, float):
        kind = "an integer" if action.type is int else "a number"
        fits = isinstance(value, int if action.type is int else (int, float)) and not isinstance(value, bool)
        converted = action.type(value) if fits else None
    elif action.type is not None:  # --grad-checkpoints: fractions, as a list, a number or the flag's text
        kind, converted = "a list of fractions like [0, 0.5, 1]", _fractions(value, action.type)
    else:
        kind = "a list or a string" if action.dest in LIST_KEYS else "a string"
        converted = _text(value, action.dest)
        if converted is not None and action.choices is not None and converted not in action.choices:
            raise UsageError(f"{path}: {key} must be one of {', '.join(map(str, action.choices))}, got {converted!r}")
    if converted is None:
        shown = f"{value!r}" if isinstance(value, (str, int, float)) else f"a {_toml_type(value)}"
        raise UsageError(f"{path}: {key} must be {kind}, got {shown}")
    return converted


def _fractions(value: Any, parse: Any) -> tuple[float, ...] | None:
    if isinstance(value, str):
        try:
            return parse(value)
        except (argparse.ArgumentTypeError, ValueError):
            return None
    items = value if isinstance(value, list) else [value]
    if not items or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in items):
        return None
    return tuple(float(v) for v in items)


def _text(value: Any, dest: str) -> str | None:
    """A string option's value as its flag's text: lists (and a grid's table) joined with commas."""
    if isinstance(value, str):
        return value
    if dest not in LIST_KEYS:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)  # seeds = 3
    if isinstance(value, list) and value and all(isinstance(v, (str, int)) and not isinstance(v, bool) for v in value):
        return ",".join(map(str, value))
    if dest == "grid" and isinstance(value, dict) and value:  # grid = {lr = [1e-3, 3e-3], tau = [0.5, 1]}
        parts = []
        for k, vs in value.items():
            vs = vs if isinstance(vs, list) else [vs]
            if not vs or not all(isinstance(v, (str, int, float)) for v in vs):
                return None
            parts.append(f"{k}=" + ",".join(_grid_value(v) for v in vs))
        return ",".join(parts)
    return None


def _grid_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return repr(v) if isinstance(v, float) else str(v)


def _toml_type(value: Any) -> str:
    return {dict: "table", list: "list", bool: "boolean"}.get(type(value), type(value).__name__)


def _given(sub: argparse.ArgumentParser, argv: Sequence[str]) -> set[str]:
    """The dests the command line itself sets (parsed once with every default suppressed)."""
    saved = [(a, a.default, a.required) for a in sub._actions]
    saved_groups = [(g, g.required) for g in sub._mutually_exclusive_groups]
    try:
        for action in sub._actions:
            action.default, action.required = argparse.SUPPRESS, False
        for group in sub._mutually_exclusive_groups:
            group.required = False
        command = next(arg for arg in argv if not arg.startswith("-"))
        namespace, _ = sub.parse_known_args(list(argv)[list(argv).index(command) + 1:])
        return set(vars(namespace))
    finally:
        for action, default, required in saved:
            action.default, action.required = default, required
        for group, required in saved_groups:
            group.required = required
