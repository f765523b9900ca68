"""The README's and the docs' tables of estimators and tasks, generated from the registry, and the README's
verdict table, copied from the committed study report ``claims.md``.

Each table sits in a marked block, ``<!-- gradbench:NAME:begin -->`` ... ``<!-- gradbench:NAME:end -->``,
so the prose around it survives (as the leaderboard's block does). The rows are the built-in estimators
and tasks (``BUILTIN_ESTIMATORS``, ``BUILTIN_TASKS``: installed plugins would make the committed docs
depend on the machine), and whatever the registry knows is read from it: an estimator's node kinds,
unbiased claim, settings with their defaults, whether it batches seeds and compiles; a task's metrics
with their directions (main first) and its presets' batch size, learning rate and steps. What it cannot
know (what a method does, its paper, a protocol in words) is written below, one entry per name; a
built-in without an entry still gets its row, from its docstring, so no table misses one. The verdict
table is claims.md's "Verdicts side by side", its links pointed into claims.md, so every number the README
gives for the paper's claims is the report's, never a hand copy that drifts when the report is remade.

    python -m gradbench.docs_tables            # rewrite the blocks in README.md and docs/
    python -m gradbench.docs_tables --check    # exit 1, naming the files, if a block is out of date

``tests/test_docs_tables.py`` checks that the committed tables are what this writes.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gradbench.claims import SIDE_BY_SIDE
from gradbench.registry import BUILTIN_ESTIMATORS, BUILTIN_TASKS, get_estimator_class, get_task_class

ROOT = Path(__file__).resolve().parents[1]  # the repository, for an editable install
FILES = ("README.md", "docs/estimators.md", "docs/tasks.md")  # where the blocks are
KIND_ORDER = ("sign", "threshold", "argmax", "bernoulli", "categorical", "sort", "topk", "rank", "round", "kmeans")
STOCHASTIC = frozenset({"bernoulli", "categorical"})
BLOCK = re.compile(r"(<!-- gradbench:(?P<name>[\w-]+):begin -->\n)(?P<body>.*?)(<!-- gradbench:(?P=name):end -->)",
                   re.S)

# ---------------------------------------------------------------- what the registry cannot know

# The README's table: (what it does, from the papers; gradbench's own additions). Row order: this order,
# then any other built-in.
README_ESTIMATORS: dict[str, tuple[str, str]] = {
    'dab': (
        "DAB (Ramapuram & Webb 2020, official code): the forward value is the exact hard function; the task's "
        'gradient reaches the logits through the Jacobian of a small approximator network g; g learns only from '
        '`gamma * sum((g(h) - f(h))^2)`, `gamma=10`. Approximators `batch` (one MLP over all units, hidden 128) '
        "and `independent` (one shared per-unit MLP, hidden 256). The official code's node is a sign with margin.",
        'Stochastic nodes: g sees the logits **and the uniform noise that drew the sample**, so it can learn the '
        "deterministic map (logits, noise) -> sample. On nodes that change shape (rank, kmeans) g maps the input's "
        "features to the output's. `lr`: a learning rate of g's own (default: the task's, as in the official "
        'code). `independent` runs only on elementwise nodes (it sees one element at a time and cannot represent '
        'an argmax, a sort or a nearest centroid).'),
    'ste': (
        "Straight-through, three published variants: `identity` (default), `clipped` (hardtanh's backward), `prob` "
        "(backward through sigmoid/softmax: ST-Bernoulli, ST-categorical); on kmeans vectors, VQ-VAE's z + sg(e - "
        'z)',
        '`prob` is refused on `sign` and the structured nodes (no mean function); `rank` and kmeans assignments '
        'are refused (a gradient cannot be copied across a change of shape); `clipped` on `round` passes the '
        "gradient inside the node's range"),
    'exact': (
        'Autograd through the true sort: the exact gradient P^T dL/dy almost everywhere, the reference for sort '
        'nodes',
        ''),
    'perturbed': (
        'Perturbed optimizers (Berthet et al. 2020): Monte Carlo Jacobian E[y(x + sigma Z) Z^T] / sigma, '
        '`perturbations=16` Gaussian draws, `sigma=1`',
        'forward value is the exact hard function; y(x) subtracted from each draw (`baseline`, same mean, lower '
        'variance)'),
    'blackbox': (
        'Blackbox differentiation (Vlastelica et al. 2020): a second solver call at the cost moved by `lam` times '
        'the gradient, (y(c) - y(c - lam g)) / lam',
        "rank's second call is an assignment problem, solved exactly on the device by subset dynamic programming "
        "(n <= 12); `lam` applies to each example's own gradient (the official code's lambda / batch size; "
        'docs/estimators.md)'),
    'imle': (
        'I-MLE (Niepert et al. 2021): perturb-and-MAP towards the target distribution x - lam g, Gumbel noise for '
        'argmax and Sum-of-Gamma for top-k',
        'noise in the backward only (the forward is the exact hard value); divided by `lam`, so `tau=0` is '
        "`blackbox`; `lam` is the official code's lambda / batch size"),
    'softsort': (
        'SoftSort (Prillo & Eisenschlos 2020) and `variant=neuralsort` (Grover et al. 2019): the backward of a '
        'relaxed permutation matrix at temperature `tau`',
        'forward value is the exact hard function (straight-through style)'),
    'gumbel': (
        'Gumbel-Softmax / binary Concrete (Jang et al. 2017; Maddison et al. 2017); `hard=true` is '
        'straight-through Gumbel; `anneal_rate` gives tau_t = max(tau_min, tau e^(-rate t)), the official '
        "notebook's schedule",
        'Uniforms clamped away from 0 and 1; with `hard=false` the cost is also evaluated at the discrete sample, '
        'for the record (not charged: `cost_evals` 1, `report_evals` 1)'),
    'reinforce': (
        'Score function (Williams 1992); `baseline=rloo` (default, Kool et al. 2019: leave-one-out over '
        '`samples=2` draws) or `none`',
        '`baseline=ema`: a moving average of past batch-mean costs, bias-corrected like Adam, never including the '
        'current draws'),
    'relax': (
        'RELAX (Grathwohl et al. 2018): control variate eta f(sigma_tau(z)) + r_psi(sigma_tau(z)); `variant=rebar` '
        '(Tucker et al. 2017): eta f(sigma_tau(z)); eta, tau and psi trained on the variance of the estimate by '
        'double backprop; 3 cost evaluations per step',
        'eta, tau, psi have a learning rate of their own, `lr=1e-2`; r_psi is one hidden Tanh layer of `hidden=64` '
        '(smooth, so the double-backprop variance gradient is exact; version 1 used ReLU); the variance is that of '
        'the whole estimate, the cost\'s direct path to the logits included (version 3)'),
    'arm': (
        'ARM (Yin & Zhou 2019): (f(b1) - f(b2)) (u - 1/2) on an antithetic pair, 2 cost evaluations; on '
        'categorical nodes ARSM (Yin, Yue & Zhou 2019): Dirichlet augmentation and swapped pseudo actions',
        'ARSM evaluates all 1 + C(C-1)/2 pseudo actions (fixed shapes, no de-duplication); every evaluated row '
        "trains the cost's own parameters"),
    'disarm': (
        'DisARM (Dong, Mnih & Tucker 2020): ARM with the augmenting uniform integrated out, 1/2 (f(b) - f(b~)) 1[b '
        '!= b~] (-1)^b~ sigmoid(\\|phi\\|); 2 cost evaluations',
        'categorical refused in one line (use `arm`); `examples/disarm.py` is the same estimator as a plugin, '
        '`my-disarm`'),
    'nvil': (
        'NVIL (Mnih & Gregor 2014): score function with a running-mean baseline and a learned input-dependent '
        'baseline network, trained on the squared centred cost',
        "the baseline network sees the example's logits; `normalise=true` is the paper's variance normalisation, "
        'off by default because it biases the estimate; `lr=3e-3` of its own'),
    'muprop': (
        'MuProp (Gu et al. 2016): the first-order Taylor expansion of the cost around the mean-field point as '
        "control variate, its mean's derivative added back; 2 cost evaluations",
        ''),
    'indecater': (
        'IndeCateR (De Smet et al. 2023): per variable, the exact sum over its classes with the other variables '
        'from the draw',
        '1 + numel cost evaluations (Bernoulli), 1 + V(K-1) (V variables of K classes): f(x) shared by all '
        'variables; N draws with `samples=N`'),
    'vimco': (
        'VIMCO (Mnih & Rezende 2016): leave-one-out baselines for the k-sample importance-weighted bound',
        'needs per-sample log-weights (`Task.with_log_weight`): runs on `vae:iw_k=k` (k >= 2), refused elsewhere '
        'in one line'),
    'gumbel-rao': (
        'Gumbel-Rao (Paulus et al. 2021): straight-through Gumbel with the relaxed sample averaged over `draws=10` '
        'Gumbel noises conditioned on the draw; 1 cost evaluation',
        'same mean as `gumbel:hard=true` at the same `tau`, lower variance (tested)'),
    'reinmax': (
        "ReinMax (Liu et al. 2023): Heun's-method straight-through, exact for quadratic costs at `tau=1`; 1 cost "
        'evaluation',
        'Bernoulli as two classes with logits (0, x)'),
}

# docs/estimators.md's table of the estimators that run Bernoulli or categorical nodes: (paper, cost
# evaluations per step, which depend on the node for some, so they are written out).
GLANCE: dict[str, tuple[str, str]] = {
    'reinforce': ('Williams 1992; RLOO: Kool et al. 2019',
        '`samples` (2)'),
    'relax': ('Grathwohl et al. 2018; `variant=rebar`: Tucker et al. 2017',
        '3'),
    'arm': ('Yin & Zhou 2019; categorical: ARSM, Yin, Yue & Zhou 2019',
        '2; categorical 1 + C(C-1)/2'),
    'disarm': ('Dong, Mnih & Tucker 2020',
        '2'),
    'nvil': ('Mnih & Gregor 2014',
        '1'),
    'muprop': ('Gu, Levine, Sutskever & Mnih 2016',
        '2'),
    'indecater': ('De Smet, Sansone & Zuidberg Dos Martires 2023',
        '1 + numel (Bernoulli); 1 + V(K-1) (V variables of K classes)'),
    'vimco': ('Mnih & Rezende 2016',
        '1'),
    'gumbel': ('Jang et al. 2017; Maddison et al. 2017',
        '1 (`hard=false` also evaluates the discrete row, to report its cost: `report_evals` 1, not charged)'),
    'gumbel-rao': ('Paulus, Maddison & Krause 2021',
        '1'),
    'reinmax': ('Liu et al. 2023',
        '1'),
    'ste': ('Bengio et al. 2013 (variants: see below)',
        '1'),
    'dab': ('Ramapuram & Webb 2020',
        '1'),
}

UNBIASED_NOTES = {"nvil": "with `normalise=false`", "vimco": "unbiased for the k-sample bound"}
KIND_NOTES = {"vimco": "on a task with per-sample log-weights (`vae:iw_k=k`)"}  # docs/estimators.md's table
SETTINGS_NOTES = {"indecater": "; N draws: `samples=N`", "vimco": " (k is the task's)"}

# The README's task table: (node, quick preset, paper preset), the presets' batch size, learning rate and
# steps added from the registry.
README_TASKS: dict[str, tuple[str, str, str]] = {
    "sort": ("`sign` (margin 0.5) on 256 units; `node=bernoulli`", "5-sort, fresh data each step",
             "the DAB paper's 10-sort: 2M training / 400k test sequences"),
    "toy": ("`bernoulli` (100 units); `variant=categorical` (100 x 4)", "t = 0.45",
            "t = 0.499 (RELAX's hard case)"),
    "classify": ("`sign` on 256 units; `node=threshold`, `node=bernoulli`; the sort non-linearity `node=sort` "
                 "(groups of 8), `node=rank` (each group's permutation matrix), `node=round` (4 levels)", "digits",
                 "Fashion-MNIST, 512 units"),
    "autoencode": ("`categorical` 20 x 10; `node=argmax`, `bernoulli`, `threshold`; `node=kmeans` (VQ-style: 20 "
                   "vectors of 8, 10 centroids updated by moving averages; `kmeans_output=assignments`)", "digits",
                   "Fashion-MNIST, hidden 512"),
    "topk": ("`topk` (k = 4 of 32 features)", "4 informative features, 4 proxies, 4 classes",
             "8 of 128 features, 10 classes"),
    "vae": ("`bernoulli` 200 latents; `node=categorical`; `iw_k=k` (default 1): the k-sample importance-weighted "
            "bound, for `vimco`; `protocol=disarm` (presets `disarm-linear`, `disarm-nonlinear`: DisARM's "
            "launcher) and `protocol=reinmax` (presets `reinmax-CxL`: ReinMax's categorical grid)", "digits",
            "Fashion-MNIST"),
    "polyprog": ("`categorical` 128 x 2", "ReinMax's problem (c = 0.45, p = 2)", "ReinMax's script: 40 epochs of 200 "
                 "steps"),
}
METRIC_LABELS = {  # the README's words for the metrics (docs/tasks.md shows their names)
    "all_or_none": "all-or-none accuracy", "per_element": "per-element accuracy", "test_loss": "test loss",
    "gap": "`gap`", "expected_cost": "expected cost", "accuracy": "test accuracy",
    "test_recon": "reconstruction (nats)", "probe_accuracy": "linear-probe accuracy", "precision": "subset precision",
    "test_elbo": "test ELBO", "test_iw_bound": "importance-weighted bound", "train_elbo": "train ELBO",
    "expected_loss": "expected loss",
}
METRIC_NOTES = {"toy": "exact (closed form)", "polyprog": "exact (closed form)"}

# docs/tasks.md's table: (node, where the protocol comes from).
DOCS_TASKS: dict[str, tuple[str, str]] = {
    "sort": ("`sign` (margin 0.5) on 256 units; `node=bernoulli`", "the DAB paper, section 4.1"),
    "topk": ("`topk` (k = 4 of 32 features)", "gradbench (an L2X-style synthetic problem)"),
    "toy": ("`bernoulli` (100 units); `variant=categorical` (100 x 4 classes)", "REBAR/RELAX's toy"),
    "classify": ("`sign` (margin 0.5) on 256 units; `node=threshold`, `node=bernoulli`, `node=sort`, `node=rank` "
                 "(groups of 8), `node=round` (4 levels)", "gradbench"),
    "autoencode": ("`categorical` 20 x 10; `node=argmax`, `bernoulli`, `threshold`, `kmeans` (20 vectors of 8, 10 "
                   "centroids)", "gradbench"),
    "vae": ("`bernoulli` 200 latents; `node=categorical`; `iw_k=k` (default 1): k samples per example, the k-sample "
            "bound (for `vimco`); `protocol=disarm`, `protocol=reinmax`: the published models",
            "REBAR/RELAX's model, gradbench's protocol; DisARM's launcher (`disarm-*` presets) and ReinMax's "
            "categorical VAE (`reinmax-*`), [protocols.md](protocols.md)"),
    "polyprog": ("`categorical` 128 x 2 (X_i = first class)", "ReinMax's polynomial programming"),
}


# ---------------------------------------------------------------- facts from the registry


def ordered(names: list[str], first: dict[str, Any]) -> list[str]:
    """``names`` in the order of ``first``'s keys, then the rest in their own order."""
    return [n for n in first if n in names] + [n for n in names if n not in first]


def kinds_text(supports: frozenset[str], all_word: str) -> str:
    """``all``, ``all but rank`` or the kinds in a fixed order."""
    every = frozenset(KIND_ORDER)
    if supports >= every:
        return all_word
    missing = every - supports
    if len(missing) == 1 and len(supports) > 2:
        return f"{all_word} but {next(iter(missing))}"
    return ", ".join([k for k in KIND_ORDER if k in supports] + sorted(supports - every))


def unbiased_text(name: str, cls: type) -> str:
    base = "yes" if cls.unbiased else "no"
    return f"{base} ({UNBIASED_NOTES[name]})" if name in UNBIASED_NOTES else base


def number(v: Any) -> str:
    """A default as the docs write it: 1, 0.5, 1e-2, false, rloo."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        if v.is_integer():
            return str(int(v))
        if abs(v) < 0.1:
            mantissa, exponent = f"{v:.12e}".split("e")
            return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"
        return f"{v:g}"
    if isinstance(v, int):
        return f"{v:,}" if abs(v) >= 10_000 else str(v)
    return str(v)


def settings_text(name: str, cls: type) -> str:
    """Each config key with its default (a key whose default is None: the key alone)."""
    parts = [f"`{f.name}`" + ("" if f.default is None else f" ({number(f.default)})")
             for f in dataclasses.fields(cls.Config)]
    return (", ".join(parts) or "none") + SETTINGS_NOTES.get(name, "")


def summary(obj: type) -> str:
    """The first sentence of the module's (else the class's) docstring: a row for a built-in without prose."""
    doc = inspect.getdoc(sys.modules.get(obj.__module__)) or inspect.getdoc(obj) or ""
    first = doc.split("\n\n")[0].replace("\n", " ")
    return first.split(". ")[0].rstrip(".")


def markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell.replace("\n", " ") for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- the tables


def readme_estimators() -> str:
    rows = []
    for name in ordered(list(BUILTIN_ESTIMATORS), README_ESTIMATORS):
        cls = get_estimator_class(name)
        does, own = README_ESTIMATORS.get(name, (summary(cls), ""))
        rows.append([f"`{name}`", kinds_text(frozenset(cls.supports), "all"), unbiased_text(name, cls), does, own])
    return markdown(["name", "node kinds", "unbiased", "what it does (from the papers)", "gradbench's own additions"],
                    rows)


def estimators_glance() -> str:
    """The estimators that run a Bernoulli or categorical node."""
    rows = []
    for name in ordered(list(BUILTIN_ESTIMATORS), GLANCE):
        cls = get_estimator_class(name)
        if not frozenset(cls.supports) & STOCHASTIC:
            continue
        paper, evals = GLANCE.get(name, (summary(cls), "see `diagnostics['cost_evals']`"))
        kinds = kinds_text(frozenset(cls.supports), "all kinds")
        if name in KIND_NOTES:
            kinds += f", {KIND_NOTES[name]}"
        yes = {True: "yes", False: "no"}
        rows.append([f"`{name}`", paper, kinds, unbiased_text(name, cls), evals, settings_text(name, cls),
                     f"{yes[bool(getattr(cls, 'batchable', True))]}, {yes[bool(getattr(cls, 'compilable', True))]}"])
    return markdown(["name", "paper", "kinds", "unbiased", "cost evals / step", "settings (default)",
                     "batched seeds, compile"], rows)


def main_first(cls: type) -> list[str]:
    """The task's test metrics (no ``valid_*``), its main metric first."""
    names = list(cls.test_metrics())
    return [cls.main_metric] + [m for m in names if m != cls.main_metric]


def arrow(cls: type, metric: str) -> str:
    return "↑" if cls.metrics[metric] else "↓"


def preset_text(cls: type, preset: str, words: str) -> str:
    """``words``, then the preset's batch size, Adam learning rate and steps, from the registry."""
    config = cls.make_config(None, preset)
    facts = f"batch {config.batch_size}, Adam {number(config.lr)}, {cls.presets[preset].steps:,} steps"
    return f"{words}, {facts}" if words else facts


def readme_tasks() -> str:
    rows = []
    for name in ordered(list(BUILTIN_TASKS), README_TASKS):
        cls = get_task_class(name)
        node, quick, paper = README_TASKS.get(name, (f"`{cls.node_of(cls.make_config())}`", "", ""))
        metrics = ", ".join(f"{METRIC_LABELS.get(m, f'`{m}`')} {arrow(cls, m)}" for m in main_first(cls))
        if name in METRIC_NOTES:
            metrics += f"; {METRIC_NOTES[name]}"
        rows.append([f"`{name}`", node, preset_text(cls, "quick", quick), preset_text(cls, "paper", paper), metrics])
    return markdown(["task", "node", "quick preset (CPU)", "paper preset (GPU)", "metrics (main first)"], rows)


def tasks_summary() -> str:
    rows = []
    for name in ordered(list(BUILTIN_TASKS), DOCS_TASKS):
        cls = get_task_class(name)
        node, source = DOCS_TASKS.get(name, (f"`{cls.node_of(cls.make_config())}`", summary(cls)))
        metrics = ", ".join(f"`{m}` {arrow(cls, m)}" for m in main_first(cls))
        rows.append([f"`{name}`", node, metrics, source])
    return markdown(["task", "node", "metrics (main first; ↑ higher, ↓ lower is better)", "protocol from"], rows)


def readme_claims(root: Path = ROOT) -> str:
    """claims.md's side-by-side verdict table, with its anchors made links into claims.md."""
    path = root / "claims.md"
    text = path.read_text() if path.exists() else ""
    found = re.search(rf"^## {re.escape(SIDE_BY_SIDE)}\n\n((?:\|.*\n)+)", text, re.M)
    if found is None:
        raise ValueError(f"{path}: no '{SIDE_BY_SIDE}' table; make it with gradbench study "
                         "studies/dab-claims.toml --profile cpu,full --report-only --out claims.md")
    return found.group(1).replace("](#", "](claims.md#")


TABLES: dict[str, Callable[[Path], str]] = {
    "estimators": lambda root: readme_estimators(),
    "estimators-glance": lambda root: estimators_glance(),
    "tasks": lambda root: readme_tasks(),
    "tasks-summary": lambda root: tasks_summary(),
    "claims": readme_claims,
}


# ---------------------------------------------------------------- the marked blocks


def rewrite(text: str, root: Path = ROOT) -> str:
    """``text`` with every known block's body replaced by its table (unknown block names left alone; the
    claims table is read from ``root``'s claims.md)."""

    def body(m: re.Match[str]) -> str:
        name = m.group("name")
        if name not in TABLES:
            return m.group(0)
        return m.group(1) + TABLES[name](root) + m.group(4)

    return BLOCK.sub(body, text)


def blocks(text: str) -> list[str]:
    """The names of the known blocks in ``text``."""
    return [m.group("name") for m in BLOCK.finditer(text) if m.group("name") in TABLES]


def stale(root: Path = ROOT) -> list[str]:
    """The files under ``root`` whose blocks differ from the registry's tables."""
    return [f for f in FILES
            if (root / f).exists() and rewrite((root / f).read_text(), root) != (root / f).read_text()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gradbench.docs_tables",
                                     description="Rewrite the README's and docs' tables from the registry "
                                                 "(and the README's verdict table from claims.md).")
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a table is out of date")
    parser.add_argument("--root", type=Path, default=ROOT, help="the repository (default: %(default)s)")
    args = parser.parse_args(argv)
    out_of_date = stale(args.root)
    if args.check:
        for f in out_of_date:
            print(f"{f}: tables differ from the registry or claims.md; run python -m gradbench.docs_tables",
                  file=sys.stderr)
        return 1 if out_of_date else 0
    for f in out_of_date:
        path = args.root / f
        path.write_text(rewrite(path.read_text(), args.root))
        print(f"rewrote {f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
