"""The linear head of the InternVL linear-probing and few-shot recipes."""
from __future__ import annotations

from typing import List, Optional, Sequence, Union

import torch
from mmcv.cnn import build_norm_layer
from mmseg.models.decode_heads.decode_head import BaseDecodeHead
from mmseg.registry import MODELS


@MODELS.register_module()
class InternViTLinearHead(BaseDecodeHead):
    """Batch norm on backbone features, then a 1x1 classifier (no dropout).

    A thin :class:`BaseDecodeHead`: input selection (``in_index``, ``input_transform``), the
    classifier ``conv_seg``, losses and prediction resizing are mmseg's. The logits stay at the
    feature resolution (stride = patch size); the loss and the prediction upsample them
    bilinearly to the label / image size, as every mmseg head does.

    Args:
        in_channels (int | Sequence[int]): Channels of the selected feature(s); a sequence with
            ``input_transform='resize_concat'`` concatenates several blocks.
        norm_cfg (dict): Norm before the classifier. ``dict(type='BN')`` by default so that it
            runs in a single (CPU) process; the 8-GPU configs use ``'SyncBN'``, which MMEngine's
            runner turns back into BN when training is not distributed.
        dropout_ratio (float): Dropout before the classifier; 0 in the reference.
        **kwargs: Other :class:`BaseDecodeHead` arguments (``num_classes``, ``in_index``,
            ``loss_decode``, ``align_corners``, ...). ``channels`` is derived from
            ``in_channels`` and may be omitted.

    Forward:
        inputs (Sequence[Tensor]): backbone maps, each (B, C_i, h, w).
        Returns logits (B, num_classes, h, w).
    """

    def __init__(self,
                 in_channels: Union[int, Sequence[int]],
                 norm_cfg: Optional[dict] = None,
                 dropout_ratio: float = 0.0,
                 channels: Optional[int] = None,
                 **kwargs) -> None:
        if norm_cfg is None:
            norm_cfg = dict(type='BN', requires_grad=True)
        if kwargs.get('input_transform') == 'resize_concat':
            width = sum(in_channels)
        elif isinstance(in_channels, (list, tuple)) and kwargs.get('input_transform') is None:
            raise ValueError('InternViTLinearHead: a sequence of in_channels needs '
                             "input_transform='resize_concat'")
        else:
            width = in_channels
        if channels is not None and channels != width:
            raise ValueError(f'InternViTLinearHead classifies the input features directly: '
                             f'channels must equal their width {width}, got {channels}')
        super().__init__(in_channels, width, norm_cfg=norm_cfg, dropout_ratio=dropout_ratio,
                         **kwargs)
        self.bn = build_norm_layer(norm_cfg, self.channels)[1]

    def forward(self, inputs: List[torch.Tensor]) -> torch.Tensor:
        x = self._transform_inputs(inputs)
        return self.cls_seg(self.bn(x))
