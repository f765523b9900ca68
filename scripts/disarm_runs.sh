#!/usr/bin/env bash
# Make the runs of DisARM's Bernoulli VAE protocol on Fashion-MNIST (docs/protocols.md, studies/disarm-vae.md):
# the launcher's linear and nonlinear models (vae presets disarm-linear and disarm-nonlinear), 50,000 steps
# (the paper: 1M), the launcher's Adam 1e-4 for every estimator (the protocol fixes it: no tuning), gradient
# statistics at the start, middle and end of training, the test bound every 10,000 steps.
#
# Usage: bash scripts/disarm_runs.sh [RUNS_DIR] [STAGE ...]
#   RUNS_DIR: default results/; STAGE: any of the stages below, in the order given (default: both).
#   GB=path/to/gradbench to use another install, WORKERS=N parallel runs (default 2).
#
#   study   the study's claims: disarm, arm and RLOO-2 (reinforce:baseline=rloo,samples=2) at seeds 0-6 on
#           both models (42 runs), through `gradbench study studies/disarm-vae.toml --profile cpu`
#   others  the field's other estimators on both models at seeds 0-2 (42 runs): relax, nvil, muprop,
#           straight-through Gumbel (gumbel:hard=true), gumbel-rao, reinmax, dab
#
# Every stage is resumable: finished runs are reused, so an interrupted invocation resumes where it stopped.
# On the project's 2-core machine (2 workers, one thread each) the 84 runs take about 4.5 hours in all
# (docs/performance.md#the-disarm-protocol-on-a-2-core-machine).
DEFAULT_STAGES=(study others)
source "$(dirname "$0")/_stages.sh"
status=0
for stage in "${STAGES[@]}"; do
  case "$stage" in
    study)
      "$GB" study studies/disarm-vae.toml --profile cpu --workers "$WORKERS" --runs "$RUNS" --no-progress \
        > /dev/null || status=1 ;;
    others)
      for preset in disarm-linear disarm-nonlinear; do
        "$GB" sweep --tasks vae --preset "$preset" --device cpu --steps 50000 --grad-checkpoints 0,0.5,1 \
          --estimators relax,nvil,muprop,gumbel:hard=true,gumbel-rao,reinmax,dab --seeds 0-2 \
          --workers "$WORKERS" --runs "$RUNS" --no-progress --out "$SCRATCH/leaderboard.md" || status=1
      done ;;
    *) echo "disarm_runs.sh: unknown stage '$stage' (stages: study others)" >&2; exit 2 ;;
  esac
done
exit $status
