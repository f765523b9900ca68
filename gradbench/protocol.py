"""What the task contract and the run machinery share, and nothing else: the name of a validation-split
metric and the random streams a run's seed fans out to. A leaf (numpy only), so that ``gradbench.task``,
the plugin contract, imports neither the training loop nor the record files.
"""

from __future__ import annotations

import numpy as np

VALID_PREFIX = "valid_"  # metrics on a task's validation split: what tuning selects on, never a table's result
STREAMS = {"data": 1, "noise": 2}  # the random streams derived from a run's seed (common random numbers)


def stream_seed(seed: int, stream: str) -> int:
    """The seed of one random stream of a run (``data``: batches, binarization, fixed sets; ``noise``: the
    estimator's draws), derived from the run's seed by numpy's SeedSequence: independent streams, so that
    for one seed every estimator sees the same data whatever it draws itself."""
    return int(np.random.SeedSequence([seed % 2**63, STREAMS[stream]]).generate_state(1, np.uint64)[0] >> 1)
