"""Sliding-window inference that runs the crops through the model in batches.

mmseg's ``EncoderDecoder.slide_inference`` runs one window at a time (all images of the batch
together), so a 6B backbone sees a batch of 1-2 crops per call on a GPU that could take many
more, and the whole-image logits stay allocated in fp32 on the GPU. Here every window of every
image of the batch is cut first (they all have the same size), then run through
``encode_decode`` in chunks of ``test_cfg.crop_batch_size`` crops; the accumulation is the same
as mmseg's, so the logits are equal to float tolerance.

Switch it on in a config::

    model = dict(type='BatchedSlideEncoderDecoder',
                 test_cfg=dict(mode='slide', crop_size=(504, 504), stride=(322, 322),
                               crop_batch_size=8))

``crop_batch_size`` bounds the memory of one forward; without it (or with ``mode='whole'``)
the segmentor behaves exactly like mmseg's ``EncoderDecoder``.
"""
from __future__ import annotations

from typing import List, Tuple

import torch
from mmseg.models.segmentors import EncoderDecoder
from mmseg.registry import MODELS
from torch import Tensor


def slide_windows(h_img: int, w_img: int, crop: Tuple[int, int],
                  stride: Tuple[int, int]) -> List[Tuple[int, int, int, int]]:
    """The (y1, y2, x1, x2) windows of mmseg's slide inference, in its order."""
    (h_crop, w_crop), (h_stride, w_stride) = crop, stride
    h_grids = max(h_img - h_crop + h_stride - 1, 0) // h_stride + 1
    w_grids = max(w_img - w_crop + w_stride - 1, 0) // w_stride + 1
    windows = []
    for h_idx in range(h_grids):
        for w_idx in range(w_grids):
            y1, x1 = h_idx * h_stride, w_idx * w_stride
            y2, x2 = min(y1 + h_crop, h_img), min(x1 + w_crop, w_img)
            y1, x1 = max(y2 - h_crop, 0), max(x2 - w_crop, 0)
            windows.append((y1, y2, x1, x2))
    return windows


@MODELS.register_module()
class BatchedSlideEncoderDecoder(EncoderDecoder):
    """``EncoderDecoder`` whose slide inference batches crops (``test_cfg.crop_batch_size``)."""

    def slide_inference(self, inputs: Tensor, batch_img_metas: List[dict]) -> Tensor:
        crop_batch = self.test_cfg.get('crop_batch_size')
        if not crop_batch:
            return super().slide_inference(inputs, batch_img_metas)
        if int(crop_batch) < 1:
            raise ValueError(f'test_cfg.crop_batch_size must be >= 1, got {crop_batch}')
        B, _, h_img, w_img = inputs.shape
        windows = slide_windows(h_img, w_img, self.test_cfg['crop_size'], self.test_cfg['stride'])
        # Every crop has the same size (the crop, or the whole image when it is smaller).
        jobs = [(w, b) for w in windows for b in range(B)]
        preds = inputs.new_zeros((B, self.out_channels, h_img, w_img))
        count = inputs.new_zeros((B, 1, h_img, w_img))
        for start in range(0, len(jobs), int(crop_batch)):
            chunk = jobs[start:start + int(crop_batch)]
            crops = torch.stack([inputs[b, :, y1:y2, x1:x2] for (y1, y2, x1, x2), b in chunk])
            metas = [dict(batch_img_metas[b], img_shape=crops.shape[2:]) for _, b in chunk]
            logits = self.encode_decode(crops, metas)
            for ((y1, y2, x1, x2), b), logit in zip(chunk, logits):
                preds[b, :, y1:y2, x1:x2] += logit  # mmseg pads to full size: same sums
                count[b, :, y1:y2, x1:x2] += 1
        assert (count == 0).sum() == 0, 'slide windows do not cover the image'
        return preds / count
