"""bf16 training of mmdet detectors on mmcv 2.1.0's NMS and RoIAlign.

The 6B detection recipes train under bf16 autocast (``AmpOptimWrapper``; DeepSpeed's bf16 mode
even holds the heads in bf16), so the RPN's and RoI head's boxes and scores reach mmcv's
``nms`` in half precision. Its kernels take float32 only (the CPU one refuses anything else,
the CUDA one reads the boxes through ``data_ptr<float>``): the first training iteration dies
with "expected scalar type Float but found BFloat16". :func:`install_float32_nms` wraps mmcv's
``nms`` and ``batched_nms`` (what mmdet's RPN, ``multiclass_nms`` and mask heads call) so that
half-precision inputs are suppressed in float32 and the kept boxes are returned in the input
dtype.
:func:`install_float32_roi_align` does the same for ``mmcv.ops.RoIAlign``, whose CPU kernel
has no bf16 and whose CUDA kernel dispatches float32/float64/float16 only ("ROIAlign_forward" not
implemented for 'BFloat16'): bf16 features are pooled in float32 and the result cast back, so
gradients still flow in the model's dtype. It also makes every input contiguous: mmcv's kernels
read the map as contiguous NCHW memory whatever its strides, so a channels-last or transposed
map would silently be pooled from the wrong addresses. Both are applied
when ``detection`` is imported, so a config with
``custom_imports=dict(imports=['backbones', 'detection'])`` gets them.
"""
import functools
import importlib
import sys

import torch

_MARK = '_internvit_float32_nms'


def _rebind(name: str, stock, wrapper) -> None:
    """Point every loaded OpenMMLab module that imported ``stock`` as ``name`` (``from
    mmcv.ops import batched_nms``) at ``wrapper``; modules imported later get it from mmcv."""
    for module_name, module in list(sys.modules.items()):
        if module_name.split('.')[0] in ('mmcv', 'mmdet', 'mmseg') and \
                getattr(module, name, None) is stock:
            setattr(module, name, wrapper)


def install_float32_nms() -> bool:
    """Wrap mmcv's ``nms`` and ``batched_nms`` once; False when mmcv's ops are not importable.

    ``batched_nms`` is wrapped too because it shifts each class's (or level's) boxes by
    ``index * (max coordinate + 1)`` before suppressing them all at once: in bf16 (8 bits of
    mantissa) a box shifted to ~5000 px lands on a 32 px grid, so the overlaps would be wrong
    before ``nms`` is even called.
    """
    try:
        # the module: ``mmcv.ops.nms`` as an attribute is the function of the same name
        nms_module = importlib.import_module('mmcv.ops.nms')
    except ImportError:
        return False
    if getattr(nms_module.nms, _MARK, False):
        return True
    half = (torch.float16, torch.bfloat16)
    stock_nms, stock_batched = nms_module.nms, nms_module.batched_nms

    @functools.wraps(stock_nms)
    def nms(boxes, scores, iou_threshold, offset=0, score_threshold=0, max_num=-1):
        if torch.is_tensor(boxes) and (boxes.dtype in half or scores.dtype in half):
            dets, inds = stock_nms(boxes.float(), scores.float(), iou_threshold, offset=offset,
                                   score_threshold=score_threshold, max_num=max_num)
            return dets.to(boxes.dtype), inds
        return stock_nms(boxes, scores, iou_threshold, offset=offset,
                         score_threshold=score_threshold, max_num=max_num)

    @functools.wraps(stock_batched)
    def batched_nms(boxes, scores, idxs, nms_cfg, class_agnostic=False):
        if boxes.dtype in half or scores.dtype in half:
            dets, keep = stock_batched(boxes.float(), scores.float(), idxs, nms_cfg,
                                       class_agnostic=class_agnostic)
            return dets.to(boxes.dtype), keep
        return stock_batched(boxes, scores, idxs, nms_cfg, class_agnostic=class_agnostic)

    for wrapper in (nms, batched_nms):
        setattr(wrapper, _MARK, True)
    nms_module.nms = nms  # batched_nms looks the function up in this module at call time
    _rebind('nms', stock_nms, nms)
    _rebind('batched_nms', stock_batched, batched_nms)
    return True


def install_float32_roi_align() -> bool:
    """Wrap ``mmcv.ops.RoIAlign.forward`` once (bf16 inputs, contiguous memory); False without
    mmcv's ops."""
    try:
        roi_align = importlib.import_module('mmcv.ops.roi_align')
    except ImportError:
        return False
    cls = roi_align.RoIAlign
    if getattr(cls.forward, _MARK, False):
        return True
    stock = cls.forward

    @functools.wraps(stock)
    def forward(self, input, rois):
        # mmcv's kernels index `input` as contiguous NCHW memory without checking its strides:
        # a channels-last or transposed map (the adapter's reshaped token maps) would be pooled
        # from the wrong addresses. contiguous() is free when the map already is.
        if input.dtype == torch.bfloat16:
            return stock(self, input.float().contiguous(), rois.float()).to(input.dtype)
        return stock(self, input.contiguous(), rois)

    setattr(forward, _MARK, True)
    cls.forward = forward
    return True


def install_mixed_precision_fixes() -> bool:
    """Both wrappers; True when mmcv's ops were there to wrap."""
    return install_float32_nms() & install_float32_roi_align()
