#!/usr/bin/env bash
# Re-make leaderboard.md under the fair protocol (docs/protocol.md): quick preset, on the CPU.
#   - tasks with a validation split: the learning rate tuned per estimator on validation over three values
#     (the preset's, a third of it, three times it) at seeds 0-2, the choice reported at seeds 0-4;
#   - stochastic tasks: one table at equal steps (the preset's) and one at equal cost evaluations (--evals =
#     the preset's steps, so single-evaluation estimators train the same number of steps in both);
#   - the exact-gradient toys (no data, so no validation split): the preset's learning rate, seeds 0-4.
# Usage: bash scripts/leaderboard_runs.sh [RUNS_DIR]   (default: results/, committed with leaderboard.md;
#        GB=path/to/gradbench to use another install, WORKERS=N parallel runs, default 2)
# Every step is a resumable `gradbench tune` or `gradbench sweep`: finished runs are reused, so an
# interrupted invocation resumes where it stopped; failed runs are counted and re-run next time.
set -uo pipefail
cd "$(dirname "$0")/.."
GB=${GB:-.venv/bin/gradbench}
RUNS=${1:-results}
WORKERS=${WORKERS:-2}
SCRATCH=$(mktemp -d)
trap 'rm -rf "$SCRATCH"' EXIT
failed=0
COMMON=(--preset quick --device cpu --runs "$RUNS" --workers "$WORKERS" --no-progress --grad-checkpoints 1
        --out "$SCRATCH/leaderboard.md")
CORE=dab,ste,gumbel,reinforce,relax
tune() {  # tune TASK ESTIMATORS GRID [BUDGET...]
  local task=$1 estimators=$2 grid=$3
  shift 3
  "$GB" tune --task "$task" --estimators "$estimators" --grid "$grid" --seeds 0-2 --final-seeds 0-4 \
    "${COMMON[@]}" "$@" >/dev/null || failed=1
}
sweep() {  # sweep TASKS ESTIMATORS [BUDGET...]
  local tasks=$1 estimators=$2
  shift 2
  "$GB" sweep --tasks "$tasks" --estimators "$estimators" --seeds 0-4 "${COMMON[@]}" "$@" >/dev/null || failed=1
}
# deterministic sign nodes: the DAB paper's sort, and classification through a sign layer
tune sort dab,ste lr=1e-3,3e-3,1e-2
tune classify dab,ste lr=3e-4,1e-3,3e-3
# stochastic codes every estimator runs: equal steps, then equal cost evaluations
for budget in "--steps 1500" "--evals 1500"; do
  tune classify:node=bernoulli "$CORE" lr=3e-4,1e-3,3e-3 $budget
done
for task in autoencode vae; do
  for budget in "--steps 2000" "--evals 2000"; do
    tune "$task" "$CORE" lr=3e-4,1e-3,3e-3 $budget
  done
done
# the exact-gradient toys, with the estimators' variants
TOY=$CORE,ste:variant=prob,gumbel:hard=true,reinforce:baseline=none,reinforce:baseline=ema,samples=1,relax:variant=rebar
for budget in "--steps 2000" "--evals 2000"; do
  sweep toy,toy:variant=categorical "$TOY" $budget
done
# sort with a stochastic Bernoulli code (the slowest: last)
for budget in "--steps 4000" "--evals 4000"; do
  tune sort:node=bernoulli "$CORE" lr=1e-3,3e-3,1e-2 $budget
done
"$GB" plot --runs "$RUNS" >/dev/null
"$GB" leaderboard --runs "$RUNS" --out leaderboard.md
exit $failed
