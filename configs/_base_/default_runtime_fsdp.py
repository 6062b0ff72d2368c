# Runtime for fully fine-tuning InternViT-6B: the reference shards the optimizer state ZeRO-1
# style; we shard parameters, gradients and optimizer state with FSDP through MMEngine's
# FlexibleRunner (tools/train.py builds it from `runner_type`). Launch with tools/dist_train.sh;
# each InternViT block (~120M parameters) becomes one FSDP unit. Checkpoints are gathered into
# one full state dict on rank 0, so tools/test.py and a plain Runner can load them.
_base_ = ['./default_runtime.py']
runner_type = 'FlexibleRunner'
strategy = dict(
    type='FSDPStrategy',
    model_wrapper=dict(
        auto_wrap_policy=dict(
            type='torch.distributed.fsdp.wrap.size_based_auto_wrap_policy',
            min_num_params=int(1e8)),
        use_orig_params=True),
    state_dict_cfg='full')
