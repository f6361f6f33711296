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
# LB picks the env variant: LB=park (default: park-project/park as it is, uncapped job sizes, a running job counted
# by its remaining time) or LB=fork (env.size_max=10000 env.load_obs=work: the fork ratnadeepb/park's size cap
# with Park's pre-2019-03 remaining-work load, the options the learner tables of docs/results.md were measured
# with; reproduce them with LB=fork bash scripts/redovian_runs.sh 500000).
# TIMING picks when a job's cost is paid: TIMING=interval (default, Park's reward) or TIMING=dispatch
# (env.reward_timing=dispatch: each job's time in the system at its dispatch; same episode returns).
# AGENTS picks the learners (default "a2c ppo rl2_ppo"; e.g. AGENTS="dreamer_cpu" for DreamerV3 with the CPU
# settings, which adds env.num_envs=4).
set -u
STEPS=${1:-500000}
SEEDS_STD=${2:-"0 1 2"}
SEEDS_ADA=${3:-"0 1 2"}
SEEDS_FGT=${4:-"0 1 2"}
OUT=${OUT:-outputs/redovian2025}
PY=${PY:-.venv/bin/python}
export OMP_NUM_THREADS=1 WANDB_SILENT=true
case ${LB:-park} in
  park) LB_OPTS=() ;;
  fork) LB_OPTS=(env.size_max=10000 env.load_obs=work) ;;
  *) echo "LB must be park or fork, got '${LB}'" >&2; exit 2 ;;
esac
case ${TIMING:-interval} in
  interval|dispatch) LB_OPTS+=(env.reward_timing=${TIMING:-interval}) ;;
  *) echo "TIMING must be interval or dispatch, got '${TIMING}'" >&2; exit 2 ;;
esac
AGENTS=${AGENTS:-"a2c ppo rl2_ppo"}

learners() {  # protocol seeds [extra overrides...]
  local protocol=$1 seeds=$2
  shift 2
  for seed in $seeds; do
    for agent in $AGENTS; do
      local start=$SECONDS
      local opts=()
      case $agent in dreamer*) opts=(env.num_envs=4) ;; esac
      $PY train.py experiment=redovian2025_$protocol agent=$agent seed=$seed steps=$STEPS logger=disabled \
        progress=off "${LB_OPTS[@]}" "${opts[@]}" "$@" hydra.run.dir=$OUT/$protocol/${agent}_s$seed > $OUT/logs/${protocol}_${agent}_s$seed.log 2>&1
      echo "$protocol $agent seed $seed: rc $? in $((SECONDS - start)) s" >> $OUT/logs/times.txt
    done
  done
}

first() { echo "${1%% *}"; }
rest() { [ "$1" = "${1#* }" ] && echo "" || echo "${1#* }"; }

mkdir -p $OUT/logs
(learners standard "$SEEDS_STD"
 for p in standard adaptive; do $PY scripts/lb_heuristics.py --experiment redovian2025_$p "${LB_OPTS[@]}" > $OUT/heuristics_$p.md; done
 learners forgetting "$(first "$SEEDS_FGT")" agent.total_steps=$((2 * STEPS))) &
(learners adaptive "$SEEDS_ADA"
 learners forgetting "$(rest "$SEEDS_FGT")" agent.total_steps=$((2 * STEPS))) &
wait
