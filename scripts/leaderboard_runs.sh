#!/usr/bin/env bash
# Re-make leaderboard.md: every supported estimator on every task, quick preset, seeds 0-2, on the CPU.
# Usage: bash scripts/leaderboard_runs.sh [RUNS_DIR]   (default: results/, committed with leaderboard.md;
#        GB=path/to/gradbench to use another install, WORKERS=N parallel runs, default 2)
# Each group is a `gradbench sweep`: finished runs are reused, so an interrupted invocation resumes where
# it stopped; failed runs are counted and re-run next time.
set -uo pipefail
cd "$(dirname "$0")/.."
GB=${GB:-.venv/bin/gradbench}
RUNS=${1:-results}
WORKERS=${WORKERS:-2}
SCRATCH=$(mktemp -d)
trap 'rm -rf "$SCRATCH"' EXIT
failed=0
sweep() {  # sweep TASKS ESTIMATORS
  "$GB" sweep --tasks "$1" --estimators "$2" --seeds 0-2 --preset quick --device cpu --runs "$RUNS" \
    --workers "$WORKERS" --no-progress --out "$SCRATCH/leaderboard.md" >/dev/null || failed=1
}
# sort, the paper's deterministic sign node: DAB and straight-through
sweep sort dab,ste,ste:variant=clipped
# sort with a stochastic Bernoulli code: every estimator runs
sweep sort:node=bernoulli dab,dab:approximator=independent,hidden=16,ste,ste:variant=prob,gumbel,gumbel:hard=true,reinforce,relax
# the exact-gradient toys
sweep toy,toy:variant=categorical dab,ste,ste:variant=prob,gumbel,gumbel:hard=true,reinforce,reinforce:baseline=none,reinforce:baseline=ema,samples=1,relax,relax:variant=rebar
# the image tasks (digits): classify's sign node, and a Bernoulli code that every estimator supports
sweep classify dab,ste
sweep classify:node=bernoulli,autoencode,vae dab,ste,gumbel,reinforce,relax
"$GB" plot --runs "$RUNS" >/dev/null
"$GB" leaderboard --runs "$RUNS" --out leaderboard.md
exit $failed
