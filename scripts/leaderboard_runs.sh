#!/usr/bin/env bash
# Re-make leaderboard.md from scratch: every supported estimator on every task, quick preset, seeds 0-2.
# Usage: bash scripts/leaderboard_runs.sh [RUNS_DIR]   (default: results/, committed with leaderboard.md;
#        GB=path/to/gradbench to use another install)
# Finished runs are reused, so an interrupted invocation resumes where it stopped.
set -uo pipefail
cd "$(dirname "$0")/.."
GB=${GB:-.venv/bin/gradbench}
RUNS=${1:-results}
failed=0
run() {  # run TASK ESTIMATOR
  for seed in 0 1 2; do
    "$GB" run --task "$1" --estimator "$2" --seed "$seed" --preset quick --device cpu --runs "$RUNS" \
      --no-progress >/dev/null || { echo "run failed: $1 $2 seed $seed" >&2; failed=1; }
  done
}
# sort, the paper's deterministic sign node: DAB and straight-through
for e in dab ste ste:variant=clipped; do run sort "$e"; done
# sort with a stochastic Bernoulli code: every estimator runs
for e in dab dab:approximator=independent,hidden=16 ste ste:variant=prob gumbel gumbel:hard=true reinforce relax; do
  run sort:node=bernoulli "$e"
done
# the exact-gradient toys
for e in dab ste ste:variant=prob gumbel gumbel:hard=true reinforce reinforce:baseline=none reinforce:baseline=ema,samples=1 \
         relax relax:variant=rebar; do
  run toy "$e"
  run toy:variant=categorical "$e"
done
# the image tasks (digits): classify's sign node, and a Bernoulli code that every estimator supports
for e in dab ste; do run classify "$e"; done
for e in dab ste gumbel reinforce relax; do
  run classify:node=bernoulli "$e"
  run autoencode "$e"
  run vae "$e"
done
"$GB" plot --runs "$RUNS" >/dev/null
"$GB" leaderboard --runs "$RUNS" --out leaderboard.md
exit $failed
