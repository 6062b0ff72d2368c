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
TOOLS=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=tools/_torchrun.sh
source "$TOOLS/_torchrun.sh"
torchrun_on_node "$GPUS" "$TOOLS/test.py" "$CONFIG" "$CHECKPOINT" --launcher pytorch "$@"
