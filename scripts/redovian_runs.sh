#!/usr/bin/env bash
# The load-balancing results of docs/results.md (Redovian 2025 protocols): A2C / PPO / RL^2-PPO trained and
# evaluated on the standard, adaptive and forgetting protocols, and every dispatch rule on the same evaluation
# streams. Two lanes at a time (this machine has 2 cores).
#   bash scripts/redovian_runs.sh [STEPS] [SEEDS_STANDARD] [SEEDS_ADAPTIVE] [SEEDS_FORGETTING]
#   python scripts/compare.py outputs/redovian2025/standard --markdown   (and .../adaptive)
#   outputs/redovian2025/forgetting/AGENT_sS/forgetting.json             (the drop on A per run)
# STEPS is the budget of one phase: the forgetting protocol trains STEPS on A, then STEPS on B, with the
# learning-rate schedules stretched over both (agent.total_steps = 2 x STEPS). OUT=DIR writes elsewhere
# (default outputs/redovian2025), PY=python picks the interpreter.
set -u
STEPS=${1:-500000}
SEEDS_STD=${2:-"0 1 2"}
SEEDS_ADA=${3:-"0 1 2"}
SEEDS_FGT=${4:-"0 1 2"}
OUT=${OUT:-outputs/redovian2025}
PY=${PY:-.venv/bin/python}
export OMP_NUM_THREADS=1 WANDB_SILENT=true

learners() {  # protocol seeds [extra overrides...]
  local protocol=$1 seeds=$2
  shift 2
  for seed in $seeds; do
    for agent in a2c ppo rl2_ppo; do
      local start=$SECONDS
      $PY train.py experiment=redovian2025_$protocol agent=$agent seed=$seed steps=$STEPS logger=disabled \
        progress=off "$@" hydra.run.dir=$OUT/$protocol/${agent}_s$seed > $OUT/logs/${protocol}_${agent}_s$seed.log 2>&1
      echo "$protocol $agent seed $seed: rc $? in $((SECONDS - start)) s" >> $OUT/logs/times.txt
    done
  done
}

first() { echo "${1%% *}"; }
rest() { [ "$1" = "${1#* }" ] && echo "" || echo "${1#* }"; }

mkdir -p $OUT/logs
(learners standard "$SEEDS_STD"
 for p in standard adaptive; do $PY scripts/lb_heuristics.py --experiment redovian2025_$p > $OUT/heuristics_$p.md; done
 learners forgetting "$(first "$SEEDS_FGT")" agent.total_steps=$((2 * STEPS))) &
(learners adaptive "$SEEDS_ADA"
 learners forgetting "$(rest "$SEEDS_FGT")" agent.total_steps=$((2 * STEPS))) &
wait
