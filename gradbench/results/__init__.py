"""The results layer: between the run records on disk and every report.

    records on disk -> Record (a typed view of one record) -> RunSet (collect, apply tuning selections,
    relabel, group by table / label / seed, newest wins) -> views: the leaderboard, compare, plots, the
    terminal report, the claims report, the study's verdicts, tune's scores

- ``record``: ``Record`` (status, metric(name), gradient checkpoints, budget, cost, accel path, seed,
  provenance, run id, labels) and ``TableKey``; ``selection``: ``Selection``, a tuning's selection record.
- ``runset``: ``RunSet`` and its ``Row`` (one estimator setting's newest record per seed).
- ``catalogue``: every metric a report shows (task metrics, gradient statistics) with its direction,
  label, legend and aggregation; the main metric and the columns of a table.
- ``ranking``: a table's statistics and verdicts (best, tied, ranked, bias flag) as plain data.
- ``verdicts``: a paper's claim judged from its sides' records (``Verdict``).
- ``fmt``: the one number formatter and table writer.

No torch here: the leaderboard and the other readers stay fast and import nothing heavy. docs/results.md
shows how a new report is written (one view file plus one CLI entry).
"""

from gradbench.results import fmt
from gradbench.results.catalogue import (
    CLAIM_GRADIENT,
    GRADIENT,
    GRADIENT_PREFIX,
    TABLE_GRADIENT,
    TRACE,
    Metric,
    claim_metric,
    columns,
)
from gradbench.results.ranking import (
    ALPHA,
    BIAS_ALPHA,
    MIN_RANKED,
    Outlier,
    Ranking,
    RowStats,
    TableStats,
    bias_p,
    decide,
    decide_table,
    is_tied,
    outlier_seeds,
    tie_test,
    unranked_reason,
)
from gradbench.results.record import (
    EAGER,
    PATH_NAMES,
    Checkpoint,
    Provenance,
    Record,
    TableKey,
    path_order,
)
from gradbench.results.runset import Relabel, Row, RunSet, Table
from gradbench.results.selection import Selection, Setting
from gradbench.results.verdicts import Side, Statement, Verdict, conclude_all

__all__ = [
    "fmt", "Record", "Checkpoint", "Provenance", "Selection", "Setting", "TableKey", "EAGER", "PATH_NAMES",
    "path_order", "RunSet", "Row", "Table", "Relabel", "Metric", "GRADIENT", "GRADIENT_PREFIX", "TABLE_GRADIENT",
    "CLAIM_GRADIENT", "TRACE", "columns", "claim_metric", "ALPHA", "BIAS_ALPHA", "MIN_RANKED", "Outlier", "Ranking",
    "RowStats", "TableStats", "tie_test", "is_tied", "bias_p", "outlier_seeds", "unranked_reason", "decide",
    "decide_table", "Verdict", "Side", "Statement", "conclude_all",
]
