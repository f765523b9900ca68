"""Errors that the CLI turns into exit codes (UsageError -> 2)."""

from __future__ import annotations


class UsageError(ValueError):
    """Bad input from the user: unknown name, bad config, unsupported pair. The CLI exits 2."""


class UnsupportedError(UsageError):
    """An estimator (or one of its configs) that cannot run a node kind; sweeps skip such pairs."""


class UnknownNameError(UsageError, KeyError):
    """An estimator or task name that is not registered."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""
