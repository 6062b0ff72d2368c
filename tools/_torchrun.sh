# Sourced by tools/dist_train.sh and tools/dist_test.sh:
#   torchrun_on_node GPUS SCRIPT [script args...]
# starts GPUS processes of SCRIPT on this node with torchrun (multi-node through NNODES,
# NODE_RANK, MASTER_ADDR and PORT; defaults: 1 node, rank 0, 127.0.0.1, 29500), after checking
# that the node has that many GPUs (ALLOW_CPU_PROCESSES=1 skips the check: gloo on the CPU).
# PYTHON names the interpreter (default: python, e.g. that of an activated .venv).
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
    local available err
    if ! available=$("$python" -c 'import torch; print(torch.cuda.device_count())' 2>&1); then
        err=$(printf '%s\n' "$available" | tail -n 3)
        echo "error: '$python' cannot import torch:" >&2
        echo "$err" >&2
        echo "Activate the environment first (source .venv/bin/activate) or set PYTHON, e.g." \
             "PYTHON=.venv/bin/python $0 ..." >&2
        exit 2
    fi
    available=$(printf '%s\n' "$available" | tail -n 1)
    if [ "$gpus" -gt "$available" ] && [ "${ALLOW_CPU_PROCESSES:-0}" != 1 ]; then
        echo "error: asked for $gpus GPUs on this node but $available are available" \
             "(ALLOW_CPU_PROCESSES=1 starts $gpus CPU processes talking over gloo instead)" >&2
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
