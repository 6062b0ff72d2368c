"""MMEngine strategies for training a 6B backbone on many GPUs (``FlexibleRunner``), one
engine per file. No mmseg/mmdet imports here."""
from .deepspeed import DeepSpeedZeroStrategy, register_deepspeed_optimizers, to_deepspeed_optim_wrapper
from .distributed import init_dist_any_device
from .fsdp1 import internvit_block_auto_wrap_policy
from .fsdp2 import FSDP2Strategy, build_mp_policy, modules_to_shard, shard_model

__all__ = [
    'DeepSpeedZeroStrategy', 'register_deepspeed_optimizers', 'to_deepspeed_optim_wrapper',
    'init_dist_any_device', 'internvit_block_auto_wrap_policy', 'FSDP2Strategy',
    'build_mp_policy', 'modules_to_shard', 'shard_model'
]
