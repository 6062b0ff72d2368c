# Sourced by tools/dist_train.sh and tools/dist_test.sh:
#   torchrun_on_node GPUS SCRIPT [script args...]
# starts GPUS processes of SCRIPT on this node with torchrun (multi-node through NNODES,
# NODE_RANK, MASTER_ADDR and PORT; defaults: 1 node, rank 0, 127.0.0.1, 29500), after checking
# that the node has that many GPUs (ALLOW_CPU_PROCESSES=1 skips the check: gloo on the CPU).
torchrun_on_node() {
    local gpus=$1
    shift
    local python=${PYTHON:-python}
    local tools
    tools=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

    # More processes than this node has GPUs would only fail later, deep inside NCCL.
    if ! [[ "$gpus" =~ ^[1-9][0-9]*$ ]]; then
        echo "error: GPUS must be a positive integer, got '$gpus'" >&2
        exit 2
    fi
    local available
    available=$("$python" -c 'import torch; print(torch.cuda.device_count())' 2>/dev/null || echo 0)
    if [ "$gpus" -gt "$available" ] && [ "${ALLOW_CPU_PROCESSES:-0}" != 1 ]; then
        echo "error: asked for $gpus GPUs on this node but $available are available" >&2
        exit 2
    fi

    PYTHONPATH="$tools/..${PYTHONPATH:+:$PYTHONPATH}" \
    exec "$python" -m torch.distributed.run \
        --nnodes="${NNODES:-1}" \
        --node_rank="${NODE_RANK:-0}" \
        --master_addr="${MASTER_ADDR:-127.0.0.1}" \
        --master_port="${PORT:-29500}" \
        --nproc_per_node="$gpus" \
        "$@"
}
