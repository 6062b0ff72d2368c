#!/usr/bin/env bash
# Distributed testing on one or more nodes with torchrun.
#   tools/dist_test.sh CONFIG CHECKPOINT GPUS [test.py args...]
# Multi-node: run on every node with NNODES, NODE_RANK (0..NNODES-1), MASTER_ADDR (the address
# of node 0) and PORT set in the environment (defaults: 1 node, rank 0, 127.0.0.1, 29500).
set -euo pipefail
if [ $# -lt 3 ]; then
    echo "usage: $0 CONFIG CHECKPOINT GPUS [test.py args...]" >&2
    exit 2
fi
CONFIG=$1
CHECKPOINT=$2
GPUS=$3
shift 3
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-"127.0.0.1"}
PYTHON=${PYTHON:-python}
TOOLS=$(cd "$(dirname "$0")" && pwd)

# More processes than this node has GPUs would only fail later, deep inside NCCL.
if ! [[ "$GPUS" =~ ^[1-9][0-9]*$ ]]; then
    echo "error: GPUS must be a positive integer, got '$GPUS'" >&2
    exit 2
fi
AVAILABLE=$("$PYTHON" -c 'import torch; print(torch.cuda.device_count())' 2>/dev/null || echo 0)
if [ "$GPUS" -gt "$AVAILABLE" ] && [ "${ALLOW_CPU_PROCESSES:-0}" != 1 ]; then
    echo "error: asked for $GPUS GPUs on this node but $AVAILABLE are available" >&2
    exit 2
fi

PYTHONPATH="$TOOLS/..${PYTHONPATH:+:$PYTHONPATH}" \
exec "$PYTHON" -m torch.distributed.run \
    --nnodes="$NNODES" \
    --node_rank="$NODE_RANK" \
    --master_addr="$MASTER_ADDR" \
    --master_port="$PORT" \
    --nproc_per_node="$GPUS" \
    "$TOOLS/test.py" "$CONFIG" "$CHECKPOINT" --launcher pytorch "$@"
