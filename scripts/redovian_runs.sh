#!/usr/bin/env bash
# The load-balancing results of docs/results.md (Redovian 2025 protocols): A2C / PPO / RL^2-PPO trained and
# evaluated on the standard and adaptive protocols, and every dispatch rule on the same evaluation streams.
# Two lanes at a time (this machine has 2 cores).
#   bash scripts/redovian_runs.sh [STEPS] [SEEDS_STANDARD] [SEEDS_ADAPTIVE]
#   python scripts/compare.py outputs/redovian2025/standard --markdown   (and .../adaptive)
set -u
STEPS=${1:-100000}
SEEDS_STD=${2:-"0 1 2"}
SEEDS_ADA=${3:-"0 1"}
OUT=outputs/redovian2025
PY=${PY:-.venv/bin/python}
export OMP_NUM_THREADS=1 WANDB_SILENT=true

learners() {  # protocol seeds
  for seed in $2; do
    for agent in a2c ppo rl2_ppo; do
      $PY train.py experiment=redovian2025_$1 agent=$agent seed=$seed steps=$STEPS logger=disabled progress=off \
        hydra.run.dir=$OUT/$1/${agent}_s$seed > $OUT/logs/$1_${agent}_s$seed.log 2>&1
    done
  done
}

mkdir -p $OUT/logs
(learners standard "$SEEDS_STD") &
(learners adaptive "${SEEDS_ADA%% *}"
 for p in standard adaptive; do $PY scripts/lb_heuristics.py --experiment redovian2025_$p > $OUT/heuristics_$p.md; done
 learners adaptive "${SEEDS_ADA#* }") &
wait
