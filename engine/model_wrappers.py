"""Model wrappers: MMEngine's DDP wrapper for CPU processes."""
from __future__ import annotations

from mmengine.model import MMDistributedDataParallel
from mmengine.registry import MODEL_WRAPPERS


@MODEL_WRAPPERS.register_module()
class CPUDistributedDataParallel(MMDistributedDataParallel):
    """MMEngine's DDP wrapper, also for a model on the CPU (the gloo backend).

    MMEngine's Runner always passes ``device_ids=[LOCAL_RANK]``, which torch's
    ``DistributedDataParallel`` refuses for a CPU module; here they are dropped when every
    parameter is on the CPU. ``tools/train.py`` selects it for distributed runs without CUDA.
    """

    def __init__(self, module, device_ids=None, **kwargs) -> None:
        if all(p.device.type == 'cpu' for p in module.parameters()):
            device_ids = None
        super().__init__(module=module, device_ids=device_ids, **kwargs)
