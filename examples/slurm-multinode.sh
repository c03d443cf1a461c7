#!/bin/bash
# LoRA Lab on a Slurm cluster: one training over several machines, one torchrun per machine.
#
#   sbatch examples/slurm-multinode.sh                      # the CUDA recipe (examples/qwen3-cuda-recipe.yaml)
#   sbatch examples/slurm-multinode.sh my-run.yaml          # any config.yaml; flags of `train` may follow it
#
# Every node needs README's install at the same path (a shared home or the same image) and reach to node 0 on
# MASTER_PORT. Node 0 (the first host of the allocation) writes runs/slurm-<job id>/: the curve, checkpoints and
# the adapter; node N keeps its log in runs/slurm-<job id>-nodeN/. Watch it with `tensorboard --logdir runs` or the
# Train tab of an app started on node 0; `python -m lora_demo stop runs/slurm-<job id>` on node 0 stops every node.
#SBATCH --job-name=lora-lab
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=32
#SBATCH --time=04:00:00
set -euo pipefail
CONFIG=${1:-examples/qwen3-cuda-recipe.yaml}
shift $(( $# > 0 ? 1 : 0 ))
PYTHON=${PYTHON:-.venv/bin/python}
MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | sed -n 1p)  # (sed reads all: no SIGPIPE)
MASTER_PORT=${MASTER_PORT:-29500}
PROCS=${SLURM_GPUS_ON_NODE:-1}
# One task per node, with the allocation's CPUs (srun does not inherit --cpus-per-task since Slurm 22.05); each
# reads its own node number from SLURM_NODEID. No --kill-on-bad-exit: a node that fails fails the run on the others
# by itself, and a node whose part ended stopped must not cut node 0 short while it saves the adapter.
srun --cpus-per-task="${SLURM_CPUS_PER_TASK:-1}" bash -c '"$0" -m lora_demo train --config "$1" --nnodes "$SLURM_NNODES" \
  --node-rank "$SLURM_NODEID" --master-addr "$2" --master-port "$3" --num-processes "$4" \
  --run-name "slurm-$SLURM_JOB_ID" "${@:5}"' "$PYTHON" "$CONFIG" "$MASTER_ADDR" "$MASTER_PORT" "$PROCS" "$@"
