# The shared start of the run scripts (scripts/*_runs.sh), sourced after the script sets DEFAULT_STAGES:
# works from the repository root and sets GB (the gradbench to run; GB=path/to/gradbench for another
# install), RUNS (the first argument, default results/), STAGES (the other arguments, default
# DEFAULT_STAGES), WORKERS (parallel runs, default 2) and SCRATCH (a folder removed on exit).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
GB=${GB:-.venv/bin/gradbench}
RUNS=${1:-results}
STAGES=("${@:2}")
if [ ${#STAGES[@]} -eq 0 ]; then
  STAGES=("${DEFAULT_STAGES[@]}")
fi
WORKERS=${WORKERS:-2}
SCRATCH=$(mktemp -d)
trap 'rm -rf "$SCRATCH"' EXIT
