"""Registries of estimators and tasks: built-ins by import path, plugins by entry point or --plugin.

Nothing is imported until it is used, so ``gradbench list`` never imports torch and a broken plugin
fails only when asked for, naming its distribution.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata
import importlib.util
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gradbench.errors import UnknownNameError, UsageError

BUILTIN_ESTIMATORS = {
    "dab": "gradbench.estimators.dab:DAB",
    "ste": "gradbench.estimators.ste:StraightThrough",
    "exact": "gradbench.estimators.exact:Exact",
    "perturbed": "gradbench.estimators.perturbed:Perturbed",
    "blackbox": "gradbench.estimators.blackbox:Blackbox",
    "imle": "gradbench.estimators.imle:IMLE",
    "softsort": "gradbench.estimators.softsort:SoftSort",
    "gumbel": "gradbench.estimators.gumbel:GumbelSoftmax",
    "reinforce": "gradbench.estimators.reinforce:Reinforce",
    "relax": "gradbench.estimators.relax:Relax",
    "arm": "gradbench.estimators.arm:ARM",
    "disarm": "gradbench.estimators.disarm:DisARM",
    "nvil": "gradbench.estimators.nvil:NVIL",
    "muprop": "gradbench.estimators.muprop:MuProp",
    "reinmax": "gradbench.estimators.reinmax:ReinMax",
    "gumbel-rao": "gradbench.estimators.gumbel_rao:GumbelRao",
    "indecater": "gradbench.estimators.indecater:IndeCateR",
    "vimco": "gradbench.estimators.vimco:VIMCO",
}
BUILTIN_TASKS = {
    "autoencode": "gradbench.tasks.autoencode:AutoencodeTask",
    "classify": "gradbench.tasks.classify:ClassifyTask",
    "polyprog": "gradbench.tasks.polyprog:PolyprogTask",
    "sort": "gradbench.tasks.sort:SortTask",
    "topk": "gradbench.tasks.topk:TopkTask",
    "toy": "gradbench.tasks.toy:ToyTask",
    "vae": "gradbench.tasks.vae:VaeTask",
}
DISABLE_ENV = "GRADBENCH_DISABLE_PLUGIN_AUTOLOAD"


@dataclass
class Entry:
    name: str
    target: str | None = None  # "module:attr" to import on first use
    obj: Any = None  # the class, once loaded
    origin: str = "builtin"  # "builtin", "plugin <file>", "entry point <dist> <version>"
    error: str | None = None  # set when loading failed


class Registry:
    """Name -> class, loaded lazily."""

    def __init__(self, kind: str, group: str, builtins: dict[str, str]) -> None:
        self.kind, self.group = kind, group
        self._entries = {n: Entry(n, target=t) for n, t in builtins.items()}
        self._entry_points_scanned = False
        self._loading: str | None = None  # the name whose target is being imported

    def _scan_entry_points(self) -> None:
        if self._entry_points_scanned or os.environ.get(DISABLE_ENV):
            return
        self._entry_points_scanned = True
        for ep in importlib.metadata.entry_points(group=self.group):
            dist = getattr(ep, "dist", None)
            origin = f"entry point of {dist.name} {dist.version}" if dist else "entry point"
            if ep.name in self._entries:  # built-ins and explicit registrations win, visibly
                taken = self._entries[ep.name]
                if taken.target != ep.value:
                    print(f"gradbench: ignoring {self.kind} {ep.name!r} from {origin}: the name is taken "
                          f"({taken.origin})", file=sys.stderr)
                continue
            self._entries[ep.name] = Entry(ep.name, target=ep.value, origin=origin)

    def register(self, name: str, obj: Any, origin: str) -> None:
        """Bind ``name`` to ``obj``; a different class under a taken name is an error."""
        entry = self._entries.get(name)
        if entry is None:
            self._entries[name] = Entry(name, obj=obj, origin=origin)
        elif entry.obj is obj:
            return
        elif entry.obj is not None:
            if not _same_definition(entry.obj, obj):
                raise UsageError(f"{self.kind} name {name!r} is already registered by {_qualname(entry.obj)}; "
                                 f"cannot register {_qualname(obj)} under the same name")
            entry.obj = obj  # the same file executed again (e.g. --plugin twice): keep the newest
        elif name == self._loading or entry.target == f"{obj.__module__}:{obj.__qualname__}":
            entry.obj, entry.error = obj, None  # a lazily declared entry filled by its own import
        else:
            raise UsageError(f"{self.kind} name {name!r} is already taken by {entry.target} ({entry.origin}); "
                             f"cannot register {_qualname(obj)} under the same name")

    def names(self) -> list[str]:
        self._scan_entry_points()
        return sorted(self._entries)

    def entries(self) -> list[Entry]:
        self._scan_entry_points()
        return [self._entries[n] for n in sorted(self._entries)]

    def get(self, name: str) -> Any:
        self._scan_entry_points()
        entry = self._entries.get(name)
        if entry is None:
            raise UnknownNameError(self._unknown_message(name))
        if entry.obj is None:
            module, _, attr = (entry.target or "").partition(":")
            self._loading = name
            try:
                obj = importlib.import_module(module)
                for part in attr.split(".") if attr else []:
                    obj = getattr(obj, part)
            except Exception as e:  # a broken plugin must not take the others down
                entry.error = f"{type(e).__name__}: {e}"
                raise UsageError(
                    f"{self.kind} {name!r} ({entry.origin}, {entry.target}) failed to load: {entry.error}"
                ) from e
            finally:
                self._loading = None
            entry.obj = obj
            if getattr(obj, "name", None) != name:
                obj.name = name  # like register_*: an entry point's class answers to its entry-point name
        return entry.obj

    def _unknown_message(self, name: str) -> str:
        known = self.names()
        lowered = {k.lower(): k for k in known}
        close = [lowered[c] for c in difflib.get_close_matches(name.lower(), list(lowered), n=1)]
        hint = f"did you mean {close[0]!r}? " if close else ""
        return (f"unknown {self.kind} {name!r}; {hint}known {self.kind}s: {', '.join(known)} "
                f"(installed a plugin? pass --plugin FILE.py|module)")


def _qualname(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"


def _same_definition(a: Any, b: Any) -> bool:
    """Two classes from the same source file and qualname (a module executed twice)."""
    fa = getattr(sys.modules.get(a.__module__), "__file__", None)
    fb = getattr(sys.modules.get(b.__module__), "__file__", None)
    return a.__qualname__ == b.__qualname__ and fa is not None and fa == fb


ESTIMATORS = Registry("estimator", "gradbench.estimators", BUILTIN_ESTIMATORS)
TASKS = Registry("task", "gradbench.tasks", BUILTIN_TASKS)
_current_origin = "registered in code"


def register_estimator(name: str):
    """Class decorator: ``@register_estimator("mine")`` makes ``--estimator mine`` work."""

    def decorate(cls):
        cls.name = name
        ESTIMATORS.register(name, cls, _current_origin)
        return cls

    return decorate


def register_task(name: str):
    """Class decorator for tasks, like :func:`register_estimator`."""

    def decorate(cls):
        cls.name = name
        TASKS.register(name, cls, _current_origin)
        return cls

    return decorate


_loaded_plugins: dict[str, Any] = {}


def load_plugin(spec: str) -> None:
    """Import ``FILE.py`` or a module so its ``register_*`` decorators run. Errors are UsageErrors."""
    global _current_origin
    key = str(Path(spec).resolve()) if spec.endswith(".py") else spec
    if key in _loaded_plugins:
        return
    previous, _current_origin = _current_origin, f"plugin {spec}"
    try:
        if spec.endswith(".py"):
            path = Path(spec)
            if not path.is_file():
                raise UsageError(f"plugin file not found: {spec}")
            mod_name = f"gradbench_plugin_{path.stem}_{abs(hash(key)) % 10**8}"
            module_spec = importlib.util.spec_from_file_location(mod_name, path)
            module = importlib.util.module_from_spec(module_spec)
            sys.modules[mod_name] = module
            try:
                module_spec.loader.exec_module(module)
            except UsageError:
                raise
            except Exception as e:
                del sys.modules[mod_name]
                raise UsageError(f"plugin {spec} failed to import: {type(e).__name__}: {e}") from e
        else:
            module = _import_module_plugin(spec)
        _loaded_plugins[key] = module
    finally:
        _current_origin = previous


def _import_module_plugin(spec: str) -> Any:
    """Import the module ``spec`` names; a failure is a one-line UsageError (a folder's says what is expected)."""
    try:
        return importlib.import_module(spec)
    except UsageError:
        raise
    except Exception as e:  # like a file: a module that raises at import is a one-line error
        missing = not isinstance(e, ImportError) or getattr(e, "name", None) == spec  # not a package that failed
        if missing and Path(spec).is_dir():  # "plugins" or "./plugins/": a folder, not a module name
            raise UsageError(_folder_message(spec)) from e
        if isinstance(e, ImportError):
            raise UsageError(f"plugin module {spec!r} could not be imported: {e}") from e
        raise UsageError(f"plugin module {spec!r} failed to import: {type(e).__name__}: {e}") from e


def _folder_message(spec: str) -> str:
    """What to say when ``--plugin`` names a folder: what it expects, with the folder's .py files as examples."""
    files = sorted(p.as_posix() for p in Path(spec).glob("*.py") if p.name != "__init__.py")[:3]
    example = f" (here: {', '.join(files)})" if files else ""
    return (f"--plugin {spec!r} is a folder; pass a .py file that registers estimators or tasks{example}, "
            f"or the name of an importable module")


def loaded_plugins() -> list[str]:
    """The plugins imported in this process (a file as its absolute path, a module by name), for provenance."""
    return list(_loaded_plugins)


def get_estimator_class(name: str) -> Any:
    return ESTIMATORS.get(name)


def get_task_class(name: str) -> Any:
    return TASKS.get(name)


def list_estimators() -> list[str]:
    return ESTIMATORS.names()


def list_tasks() -> list[str]:
    return TASKS.names()
