"""Fixtures for every test file.

``isolated_registry`` (autouse): each test starts from the registry that collection saw and leaves it so;
whatever a test registers (a stand-in estimator, a ``--plugin`` file) is gone when it ends. Test files
register nothing at import time, so the conformance matrix is the same whichever files pytest collects.
"""

from __future__ import annotations

import pytest
from helpers import registry_snapshot


@pytest.fixture(autouse=True)
def isolated_registry():
    """Snapshot gradbench.registry's ESTIMATORS and TASKS (and loaded plugins); restore them after the test.

    A fixture that registers stand-ins takes this one as an argument, so it registers inside the snapshot."""
    with registry_snapshot():
        yield
