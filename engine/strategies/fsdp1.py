"""Block-level auto-wrap policy for MMEngine's own ``FSDPStrategy`` (FSDP1, CUDA only)."""
from __future__ import annotations

from typing import Optional, Sequence, Union

import torch.nn as nn
from mmengine.registry import FUNCTIONS

from .base import _matches, _resolve_wrap_classes


@FUNCTIONS.register_module()
def internvit_block_auto_wrap_policy(module: nn.Module, recurse: bool, nonwrapped_numel: int,
                                     module_classes: Optional[Sequence[Union[str, type]]] = None
                                     ) -> bool:
    """FSDP1 auto-wrap policy (``auto_wrap_policy=dict(type='internvit_block_auto_wrap_policy')``
    in MMEngine's ``FSDPStrategy`` ``model_wrapper``): one FSDP unit per InternViT ``Block``
    (or per ``module_classes`` entry, as in :func:`modules_to_shard`)."""
    if recurse:
        return True
    classes, names = _resolve_wrap_classes(module_classes)
    return _matches(module, classes, names)
