"""Pictures of segmentation results that read without the README: titled panels and a class
legend, legible at the demo's 128 px (small panels are enlarged before text is drawn), large
images drawn at reduced resolution. Used by tools/demo.py, tools/infer.py and
``tools/test.py --show-dir`` (:class:`LegendSegVisualizer`)."""
from __future__ import annotations

from typing import Optional, Sequence

import cv2
import numpy as np

FONT = cv2.FONT_HERSHEY_SIMPLEX
MIN_PANEL = 256   # panels smaller than this (on their long side) are enlarged, nearest-neighbour
MAX_PANEL = 1024  # and larger ones drawn smaller, so that text stays readable and memory small


def colorize(label: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """(H, W) labels 0..K-1 (other values, e.g. 255 = ignore: black) -> (H, W, 3) uint8."""
    palette = np.asarray(palette, np.uint8)
    out = np.zeros(label.shape + (3, ), np.uint8)
    valid = (label >= 0) & (label < len(palette))
    out[valid] = palette[label[valid]]
    return out


def display_scale(h: int, w: int) -> float:
    """Factor that brings an (h, w) panel into [MIN_PANEL, MAX_PANEL] on its long side
    (an integer factor when enlarging, so that pixels stay square blocks)."""
    long_side = max(h, w)
    if long_side < MIN_PANEL:
        return float(max(1, MIN_PANEL // long_side))
    if long_side > MAX_PANEL:
        return MAX_PANEL / long_side
    return 1.0


def resize(img: np.ndarray, scale: float, nearest: bool = False) -> np.ndarray:
    if scale == 1.0:
        return img
    h, w = img.shape[:2]
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    interp = cv2.INTER_NEAREST if nearest or scale > 1 else cv2.INTER_AREA
    return cv2.resize(img, size, interpolation=interp)


def overlay(img: np.ndarray, label: np.ndarray, palette, opacity: float = 0.55) -> np.ndarray:
    """``img`` (H, W, 3 RGB) with the label map painted over it (ignored pixels left as is)."""
    color = colorize(label, palette).astype(np.float32)
    out = img.astype(np.float32)
    mask = (label >= 0) & (label < len(palette))
    out[mask] = (1 - opacity) * out[mask] + opacity * color[mask]
    return out.astype(np.uint8)


def _text_scale(width: int) -> float:
    return float(np.clip(width / 400, 0.4, 0.8))


def title_bar(text: str, width: int) -> np.ndarray:
    """A white bar of ``width`` with ``text`` centred in black."""
    scale = _text_scale(width)
    (_, th), base = cv2.getTextSize('Ag', FONT, scale, 1)  # one height for every title
    tw = cv2.getTextSize(text, FONT, scale, 1)[0][0]
    bar = np.full((th + base + 10, width, 3), 255, np.uint8)
    cv2.putText(bar, text, (max(2, (width - tw) // 2), th + 5), FONT, scale, (0, 0, 0), 1,
                cv2.LINE_AA)
    return bar


def legend(classes: Sequence[str], palette, width: int,
           present: Optional[Sequence[int]] = None) -> np.ndarray:
    """Rows of colour swatches and class names, wrapped to ``width``; only the classes in
    ``present`` when given (every class otherwise)."""
    ids = list(range(len(classes))) if present is None else sorted(set(present))
    ids = [i for i in ids if 0 <= i < len(classes)]
    scale = _text_scale(width)
    (_, th), base = cv2.getTextSize('Ag', FONT, scale, 1)
    row_h, sw, pad = th + base + 8, th + 4, 8
    items = [(i, str(classes[i]),
              cv2.getTextSize(str(classes[i]), FONT, scale, 1)[0][0] + sw + 3 * pad) for i in ids]
    rows, row, used = [], [], pad
    for item in items:
        if row and used + item[2] > width:
            rows.append(row)
            row, used = [], pad
        row.append(item)
        used += item[2]
    if row:
        rows.append(row)
    out = np.full((max(1, len(rows)) * row_h + 4, width, 3), 255, np.uint8)
    palette = np.asarray(palette, np.uint8)
    for r, row in enumerate(rows):
        x, y = pad, r * row_h + 4
        for i, name, w in row:
            color = tuple(int(c) for c in palette[i % len(palette)])
            cv2.rectangle(out, (x, y + 2), (x + sw, y + 2 + sw), color, -1)
            cv2.rectangle(out, (x, y + 2), (x + sw, y + 2 + sw), (0, 0, 0), 1)
            cv2.putText(out, name, (x + sw + pad // 2, y + th + 3), FONT, scale, (0, 0, 0), 1,
                        cv2.LINE_AA)
            x += w
    return out


def compose(panels: Sequence[np.ndarray], titles: Sequence[str], classes: Sequence[str],
            palette, present: Optional[Sequence[int]] = None,
            label_panels: Sequence[bool] = ()) -> np.ndarray:
    """Panels side by side (brought to a readable size), a title above each, a legend below.
    ``label_panels[i]`` marks panels drawn from label maps (resized nearest-neighbour)."""
    h, w = panels[0].shape[:2]
    scale = display_scale(h, w)
    columns = []
    for k, (panel, title) in enumerate(zip(panels, titles)):
        nearest = k < len(label_panels) and label_panels[k]
        p = resize(panel, scale, nearest=nearest or scale > 1)
        column = np.concatenate([title_bar(title, p.shape[1]), p], axis=0)
        if columns:
            columns.append(np.full((column.shape[0], 4, 3), 255, np.uint8))  # white gap
        columns.append(column)
    body = np.concatenate(columns, axis=1)
    return np.concatenate([body, legend(classes, palette, body.shape[1], present)], axis=0)


def draw_segmentation(img: np.ndarray, pred: np.ndarray, classes: Sequence[str], palette,
                      gt: Optional[np.ndarray] = None, opacity: float = 0.55) -> np.ndarray:
    """``image | [ground truth |] prediction`` with titles and a legend of the classes shown.
    ``img`` is RGB (H, W, 3); ``pred``/``gt`` are (H, W) class indices (255: ignored). Large
    inputs are reduced before drawing (the overlay is computed at the reduced size)."""
    scale = min(1.0, display_scale(*img.shape[:2]))
    img = resize(img, scale)
    labels = [resize(lab.astype(np.uint8) if lab.max(initial=0) < 256 else lab, scale,
                     nearest=True) for lab in ([gt] if gt is not None else []) + [pred]]
    titles = ['image'] + (['ground truth'] if gt is not None else []) + ['prediction']
    panels = [img] + [overlay(img, lab, palette, opacity) for lab in labels]
    present = np.unique(np.concatenate([lab.ravel() for lab in labels]))
    return compose(panels, titles, classes, palette, present=present.tolist(),
                   label_panels=[False] + [True] * len(labels))


def register_legend_visualizer():
    """Register :class:`LegendSegVisualizer` in mmseg's VISUALIZERS (idempotent)."""
    from mmseg.registry import VISUALIZERS
    from mmseg.visualization import SegLocalVisualizer

    if 'LegendSegVisualizer' in VISUALIZERS.module_dict:
        return VISUALIZERS.get('LegendSegVisualizer')

    @VISUALIZERS.register_module()
    class LegendSegVisualizer(SegLocalVisualizer):
        """SegLocalVisualizer whose pictures are :func:`draw_segmentation`'s: image | ground
        truth | prediction, titled, with a legend of the classes shown. With ``out_dir``, each
        picture is written as ``out_dir/<image stem>.png`` (not through the vis backends)."""

        def __init__(self, name='visualizer', *args, out_dir=None, **kwargs):
            super().__init__(name, *args, **kwargs)  # ManagerMixin needs `name` by name
            self.out_dir = out_dir

        def add_datasample(self, name, image, data_sample=None, draw_gt=True, draw_pred=True,
                           show=False, wait_time=0, out_file=None, step=0, with_labels=True):
            meta = self.dataset_meta or {}
            classes, palette = meta.get('classes'), meta.get('palette')
            if data_sample is None or classes is None or palette is None \
                    or 'pred_sem_seg' not in data_sample:
                return super().add_datasample(name, image, data_sample, draw_gt, draw_pred, show,
                                              wait_time, out_file, step, with_labels)
            pred = data_sample.pred_sem_seg.data[0].cpu().numpy()
            gt = data_sample.gt_sem_seg.data[0].cpu().numpy() \
                if draw_gt and 'gt_sem_seg' in data_sample else None
            drawn = draw_segmentation(image, pred, classes, palette, gt=gt, opacity=self.alpha)
            if out_file is None and self.out_dir is not None:
                import os.path as osp
                stem = osp.splitext(osp.basename(data_sample.metainfo.get('img_path', name)))[0]
                out_file = osp.join(self.out_dir, stem + '.png')
            if show:
                self.show(drawn, win_name=name, wait_time=wait_time)
            if out_file is not None:
                import mmcv
                mmcv.imwrite(cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR), out_file)
            else:
                self.add_image(name, drawn, step)

    return LegendSegVisualizer


def show_every_image(cfg, hook: dict, show_dir: str) -> None:
    """``tools/test.py --show-dir`` for segmentation: every test image (mmseg's hook paints
    one in 50 by default), drawn by :class:`LegendSegVisualizer` straight into ``show_dir`` as
    ``<image stem>.png`` (mmseg's visualizer buries them in ``vis_data/vis_image``)."""
    register_legend_visualizer()
    hook['interval'] = 1
    # mmseg's hook numbers pictures with ``runner.iter``, which builds the training loop and its
    # dataset (a test without the training data then fails): a test run needs none of it
    for key in ('train_dataloader', 'train_cfg', 'optim_wrapper', 'param_scheduler'):
        cfg[key] = None
    visualizer = dict(cfg.get('visualizer') or {})
    visualizer.update(type='LegendSegVisualizer', name=visualizer.get('name', 'visualizer'),
                      out_dir=show_dir, vis_backends=None)
    visualizer.pop('save_dir', None)
    cfg.visualizer = visualizer


def report_outputs(out=None, show_dir=None, scope='mmseg') -> None:
    """The closing lines of ``tools/test.py``: where ``--out`` and ``--show-dir`` wrote."""
    import os
    import os.path as osp
    from mmengine.dist import get_rank
    if get_rank() != 0:
        return
    if out:
        what = 'predicted label maps' if scope == 'mmseg' else 'predictions (pickle)'
        n = len(os.listdir(out)) if osp.isdir(out) else None
        print(f'--out: {what} written to {osp.abspath(out)}'
              + (f' ({n} files)' if n is not None else ''), flush=True)
    if show_dir:
        n = sum(len(files) for _, _, files in os.walk(show_dir)) if osp.isdir(show_dir) else 0
        print(f'--show-dir: {n} pictures written to {osp.abspath(show_dir)}', flush=True)
