#!/usr/bin/env bash
# Re-make leaderboard.md (docs/leaderboard.md#the-committed-leaderboardmd): quick preset, on the CPU.
#
# Usage: bash scripts/leaderboard_runs.sh [RUNS_DIR] [STAGE ...]
#   RUNS_DIR: default results/ (committed with leaderboard.md); STAGE: any of the stages below, in the
#   order given (default: all, in priority order). GB=path/to/gradbench to use another install,
#   WORKERS=N parallel runs (default 2).
#
# Stages under the fair protocol (docs/protocol.md): the learning rate tuned per estimator on validation
# over three values (the preset's, a third of it, three times it) at seeds 0-2, extended by up to two
# log-steps past an edge choice (tune --extend, default 2), the choice reported at seeds 3-7 (disjoint from
# the tuning seeds, docs/protocol.md#tuning); stochastic tasks get a table at equal steps and one at equal cost evaluations (--evals = the
# preset's steps, so single-evaluation estimators train as many steps in both):
#   tuned-sort        sort (sign node): dab, ste
#   tuned-classify    classify:node=bernoulli: the five core estimators, steps and evals
#   tuned-vae         vae: the five core estimators, steps and evals
#   tuned-autoencode  autoencode: the five core estimators, steps and evals
#   tuned-sortbern    sort:node=bernoulli: the five core estimators, steps and evals
#   tuned-sign        classify (sign node): dab, ste
# The exact-gradient toys (no data, so no validation split): the preset's learning rate, seeds 0-4:
#   toys              toy, toy:variant=categorical: every estimator that runs them, steps and evals
# Breadth at the preset's learning rate, seeds 0-2 (the tables carry no [tuned] mark):
#   structured        the DAB paper's own nodes: topk, classify:node=sort|rank|round, autoencode:node=kmeans
#   stochastic        the stochastic estimators beyond the core five, on vae (Bernoulli) and autoencode
#                     (categorical)
#
# Every stage is resumable `gradbench tune` or `gradbench sweep` calls: finished runs are reused, so an
# interrupted invocation resumes where it stopped; failed runs are counted and re-run next time.
DEFAULT_STAGES=(tuned-sort tuned-classify tuned-vae toys structured stochastic tuned-autoencode tuned-sign tuned-sortbern)
source "$(dirname "$0")/_stages.sh"
failed=0
COMMON=(--preset quick --device cpu --runs "$RUNS" --workers "$WORKERS" --no-progress --grad-checkpoints 1
        --out "$SCRATCH/leaderboard.md")
CORE=dab,ste,gumbel,reinforce,relax
STOCHASTIC=arm,disarm,nvil,muprop,reinmax,gumbel-rao,indecater

tune() {  # tune TASK ESTIMATORS GRID [BUDGET...]
  local task=$1 estimators=$2 grid=$3
  shift 3
  "$GB" tune --task "$task" --estimators "$estimators" --grid "$grid" --seeds 0-2 --final-seeds 3-7 \
    "${COMMON[@]}" "$@" >/dev/null || failed=1
}
sweep() {  # sweep TASKS ESTIMATORS SEEDS [BUDGET...]
  local tasks=$1 estimators=$2 seeds=$3
  shift 3
  "$GB" sweep --tasks "$tasks" --estimators "$estimators" --seeds "$seeds" "${COMMON[@]}" "$@" >/dev/null || failed=1
}
both() {  # both TASK ESTIMATORS GRID STEPS: tuned at equal steps and at equal cost evaluations
  tune "$1" "$2" "$3" --steps "$4"
  tune "$1" "$2" "$3" --evals "$4"
}

for stage in "${STAGES[@]}"; do
  echo "stage $stage: $(date -u +%H:%M:%S)" >&2
  case $stage in
    tuned-sort) tune sort dab,ste lr=1e-3,3e-3,1e-2 ;;
    tuned-classify) both classify:node=bernoulli "$CORE" lr=3e-4,1e-3,3e-3 1500 ;;
    tuned-vae) both vae "$CORE" lr=3e-4,1e-3,3e-3 2000 ;;
    tuned-autoencode) both autoencode "$CORE" lr=3e-4,1e-3,3e-3 2000 ;;
    tuned-sortbern) both sort:node=bernoulli "$CORE" lr=1e-3,3e-3,1e-2 4000 ;;
    tuned-sign) tune classify dab,ste lr=3e-4,1e-3,3e-3 ;;
    toys)
      TOY=$CORE,ste:variant=prob,gumbel:hard=true,reinforce:baseline=none,reinforce:baseline=ema,samples=1
      TOY=$TOY,relax:variant=rebar,$STOCHASTIC
      sweep toy,toy:variant=categorical "$TOY" 0-4 --steps 2000
      sweep toy,toy:variant=categorical "$TOY" 0-4 --evals 2000 ;;
    structured)
      sweep topk,classify:node=sort,classify:node=round,autoencode:node=kmeans \
        dab,ste,exact,perturbed,blackbox,imle,softsort 0-2
      sweep classify:node=rank dab,perturbed,blackbox,softsort 0-2 ;;
    stochastic)
      sweep vae,autoencode "$STOCHASTIC" 0-2
      sweep vae:iw_k=5 vimco,reinforce 0-2 ;;
    *) echo "unknown stage $stage" >&2; failed=1 ;;
  esac
done
"$GB" plot --runs "$RUNS" >/dev/null
"$GB" leaderboard --runs "$RUNS" --out leaderboard.md
exit $failed
