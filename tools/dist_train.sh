#!/usr/bin/env bash
# Distributed training on one or more nodes with torchrun.
#   tools/dist_train.sh CONFIG GPUS [train.py args...]
# Multi-node: run on every node with NNODES, NODE_RANK (0..NNODES-1), MASTER_ADDR (the address
# of node 0) and PORT set in the environment (defaults: 1 node, rank 0, 127.0.0.1, 29500).
set -euo pipefail
if [ $# -lt 2 ]; then
    echo "usage: $0 CONFIG GPUS [train.py args...]" >&2
    exit 2
fi
CONFIG=$1
GPUS=$2
shift 2
TOOLS=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=tools/_torchrun.sh
source "$TOOLS/_torchrun.sh"
torchrun_on_node "$GPUS" "$TOOLS/train.py" "$CONFIG" --launcher pytorch "$@"
