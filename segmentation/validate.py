"""A pipeline step that checks each loaded sample and names the file at fault.

Put it after ``LoadAnnotations``, in training and in evaluation pipelines (mmseg's
``IoUMetric`` drops labels >= num_classes without a word, a whole class then shows ``nan``)::

    dict(type='ValidateSegSample', num_classes=150, on_error='raise')   # or 'skip'

It checks that the label map is one channel with the image's original height and width, and
that every label is in ``[0, num_classes)`` or the ignore index (after ``reduce_zero_label``). ``on_error='raise'``
(default) stops with a ``ValueError`` naming the image and label files; ``'skip'`` logs a
warning with the same message and drops the sample: mmengine's dataset then draws another one
(in training; ``BaseDataset`` re-fetches up to ``max_refetch`` times).

Unreadable images: mmcv's ``LoadImageFromFile`` stops with ``failed to load image: PATH`` for a
file that does not decode (its ``ignore_empty`` only covers files that cannot be fetched).
``CheckedLoadImageFromFile(on_error='skip')`` loads like it but warns and drops such a sample.
"""
import logging
from typing import Optional

import numpy as np
from mmcv.transforms import BaseTransform, LoadImageFromFile
from mmengine.logging import print_log
from mmseg.registry import TRANSFORMS


@TRANSFORMS.register_module()
class ValidateSegSample(BaseTransform):
    """Check image / label agreement and the label range of one sample.

    Args:
        num_classes (int): Number of classes; labels must be in ``[0, num_classes)``.
        ignore_index (int): The label that is ignored (255 in mmseg).
        on_error (str): ``'raise'`` or ``'skip'``.
    """

    def __init__(self, num_classes: int, ignore_index: int = 255, on_error: str = 'raise'):
        if on_error not in ('raise', 'skip'):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.on_error = on_error

    def problem(self, results: dict) -> Optional[str]:
        img, seg = results.get('img'), results.get('gt_seg_map')
        img_path, seg_path = results.get('img_path'), results.get('seg_map_path')
        if img is None:
            return f'{img_path}: image could not be read'
        if seg is None:
            return None
        if seg.ndim != 2:
            return (f'{seg_path}: label map has {seg.shape[2]} channels (a color PNG?); labels '
                    f'must be one channel of class indices (a palette or grayscale PNG)')
        # Before any resize the image has its original size; evaluation pipelines load the
        # labels after resizing the image, so there they must have the original size.
        ori = tuple(results.get('ori_shape') or img.shape[:2])[:2]
        if seg.shape[:2] != img.shape[:2] and seg.shape[:2] != ori:
            return (f'{seg_path}: label map is {seg.shape[0]}x{seg.shape[1]} but image '
                    f'{img_path} is {ori[0]}x{ori[1]}')
        labels = np.unique(seg)
        bad = labels[((labels < 0) | (labels >= self.num_classes)) & (labels != self.ignore_index)]
        if bad.size:
            reduced = ', after reduce_zero_label' if results.get('reduce_zero_label') else ''
            return (f'{seg_path}: labels {bad.tolist()[:10]} are outside the class range '
                    f'0..{self.num_classes - 1} of num_classes={self.num_classes} (ignore index '
                    f'{self.ignore_index}{reduced})')
        return None

    def transform(self, results: dict) -> Optional[dict]:
        msg = self.problem(results)
        if msg is None:
            return results
        if self.on_error == 'raise':
            raise ValueError(msg)
        print_log(f'skipping sample: {msg}', logger='current', level=logging.WARNING)
        return None

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(num_classes={self.num_classes}, '
                f'ignore_index={self.ignore_index}, on_error={self.on_error!r})')


@TRANSFORMS.register_module()
class CheckedLoadImageFromFile(LoadImageFromFile):
    """``LoadImageFromFile`` whose failures name the file and can skip the sample.

    Args:
        on_error (str): ``'raise'`` (a ``ValueError`` naming the file) or ``'skip'`` (a warning,
            and the sample is dropped so that the dataset draws another).
        **kwargs: ``LoadImageFromFile`` arguments.
    """

    def __init__(self, on_error: str = 'raise', **kwargs):
        if on_error not in ('raise', 'skip'):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        super().__init__(**kwargs)
        self.on_error = on_error

    def transform(self, results: dict) -> Optional[dict]:
        try:
            out = super().transform(results)
            if out is None:
                raise ValueError('empty file')
            return out
        except Exception as e:  # a corrupt file surfaces as AssertionError or cv2.error
            msg = f'{results.get("img_path")}: unreadable image ({e})'
            if self.on_error == 'raise':
                raise ValueError(msg) from e
            print_log(f'skipping sample: {msg}', logger='current', level=logging.WARNING)
            return None
