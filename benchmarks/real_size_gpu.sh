#!/usr/bin/env bash
# The GPU checks of the real-size runs, as one command on a machine with one CUDA GPU:
#   1. each trainer at its published architecture for 3 steps (benchmarks/real_size.py --device cuda), one at a time;
#   2. one step of each loop trainer (SEDD PPO, Flow-GRPO, PPO) under DeepSpeed ZeRO-2, ZeRO-3 and FSDP2 on one
#      process (accelerate_configs/*.yaml with --num_processes 1), one after the other (the first H200 lease ran the
#      three configurations side by side and stopped answering after about 7 minutes; nothing came back to say where).
# Each run's JSON and log go to RESULTS (default benchmarks/results/gpu), archived after every run to ARCHIVE if set.
#   [TRAINERS="sedd_ppo ppo"] [STEPS=3] [SECONDS_PER_RUN=110] [DISTRIBUTED=0] bash benchmarks/real_size_gpu.sh [RESULTS]
set -u
RESULTS=${1:-benchmarks/results/gpu}
PYTHON=${PYTHON:-python3}
mkdir -p "$RESULTS"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false

archive() { [ -n "${ARCHIVE:-}" ] && tar czf "$ARCHIVE" -C "$(dirname "$RESULTS")" "$(basename "$RESULTS")"; true; }

run() {  # run NAME SECONDS COMMAND...: the command's JSON to RESULTS/NAME.json, its output to RESULTS/NAME.log
    local name=$1 seconds=$2
    shift 2
    local start=$SECONDS
    timeout "$seconds" "$@" --output_json "$RESULTS/$name.json" >"$RESULTS/$name.log" 2>&1
    echo "$name rc=$? $((SECONDS - start))s"
    archive
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$RESULTS/machine.txt"
"$PYTHON" -c "import torch, transformers, trl, diffusers, peft, accelerate; print('torch', torch.__version__, 'transformers', transformers.__version__, 'trl', trl.__version__, 'diffusers', diffusers.__version__, 'peft', peft.__version__, 'accelerate', accelerate.__version__)" | tee -a "$RESULTS/machine.txt"

for trainer in ${TRAINERS:-sedd_ppo flow_grpo tprl ppo}; do
    run "cuda_$trainer" "${SECONDS_PER_RUN:-110}" "$PYTHON" benchmarks/real_size.py --trainer "$trainer" --device cuda --steps "${STEPS:-3}"
done
[ "${DISTRIBUTED:-1}" = 1 ] || exit 0

for config in deepspeed_zero2 deepspeed_zero3 fsdp2; do
    for trainer in sedd_ppo flow_grpo ppo; do
        run "${config}_$trainer" "${SECONDS_PER_RUN:-110}" "$PYTHON" -m accelerate.commands.launch \
            --config_file "accelerate_configs/$config.yaml" --num_processes 1 benchmarks/real_size.py \
            --trainer "$trainer" --device cuda --steps 1
    done
done
