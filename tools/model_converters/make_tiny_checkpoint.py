#!/usr/bin/env python
"""Write a tiny random checkpoint in one of the layouts this toolkit reads, to try the converter
and ``init_cfg`` without downloading 12 GB.

    python tools/model_converters/make_tiny_checkpoint.py LAYOUT OUT [--width 64] [--depth 4]
        [--heads 4] [--img-size 56] [--num-classes 4] [--seed 0]

Backbone layouts (load with ``init_cfg=dict(type='Pretrained', checkpoint=OUT)`` into an
``InternViT`` of the same tiny arch, which the tool prints):

* ``internvl``: the original InternVL ``.pth`` (our names, bare state dict);
* ``hf_remote``: an OpenGVLab Hugging Face directory (``model.safetensors`` in the remote-code
  ``InternVisionModel`` names, ``config.json``);
* ``hf_native``: transformers' ``InternVLVisionModel.save_pretrained`` directory;
* ``timm``: timm's ``VisionTransformer`` (the ``vit_intern300m`` family: LayerNorm, qkv bias).

Whole-model layouts of the reference's released checkpoints (convert them with
``tools/model_converters/internvit2mmseg.py OUT converted.pth``):

* ``released_segmentation``: InternVL's UperNet release (``backbone.*`` with the pyramid as
  ``backbone.up1/up2``, mmseg's ``decode_head.*`` UPerHead and ``auxiliary_head.*`` FCN);
* ``released_linear``: InternVL's linear-head release (``decode_head.norm`` + ``conv_seg``);
* ``released_detection``: the InternVL-MMDetSeg / PIIP Mask R-CNN layout (no cls token, FPN as
  ``neck.*``, mmdet's ``rpn_head.*`` / ``roi_head.*``).
"""
import argparse
import json
import os
import os.path as osp
import sys

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if ROOT not in sys.path:  # run from a checkout that is not pip-installed
    sys.path.insert(0, ROOT)

import torch  # noqa: E402

BACKBONE_LAYOUTS = ('internvl', 'hf_remote', 'hf_native', 'timm')
WHOLE_LAYOUTS = ('released_segmentation', 'released_linear', 'released_detection')
LAYOUTS = BACKBONE_LAYOUTS + WHOLE_LAYOUTS


def tiny_arch(args, timm_style=False):
    return dict(embed_dims=args.width, num_layers=args.depth, num_heads=args.heads,
                mlp_ratio=4.0, norm_type='layer_norm' if timm_style else 'rms_norm',
                qk_norm=not timm_style, qkv_bias=timm_style, layer_scale_init=0.1)


def _randomize(module, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(module.named_parameters()):
            if p.ndim == 1 and ('norm' in name or name.endswith(('.bn.weight', 'gamma'))):
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.02 * torch.randn(p.shape, generator=g))
        for name, b in module.named_buffers():
            if name.endswith('running_var'):
                b.copy_(0.5 + torch.rand(b.shape, generator=g))
    return module


def internvit_state_dict(args, timm_style=False, with_cls_token=True, patch=None):
    from backbones import InternViT
    model = InternViT(arch=tiny_arch(args, timm_style), img_size=args.img_size,
                      patch_size=patch or args.patch, with_cls_token=with_cls_token)
    return _randomize(model, args.seed).state_dict()


def to_hf_remote(sd):
    out = {}
    for k, v in sd.items():
        if k == 'cls_token':
            out['embeddings.class_embedding'] = v
        elif k == 'pos_embed':
            out['embeddings.position_embedding'] = v
        elif k.startswith('patch_embed.proj.'):
            out['embeddings.patch_embedding.' + k.rsplit('.', 1)[-1]] = v
        else:
            out[k.replace('blocks.', 'encoder.layers.', 1).replace('.gamma', '')] = v
    return out


def write_hf_native(args, out):
    from transformers import InternVLVisionConfig, InternVLVisionModel
    cfg = InternVLVisionConfig(
        hidden_size=args.width, num_hidden_layers=args.depth, num_attention_heads=args.heads,
        intermediate_size=4 * args.width, norm_type='rms_norm', use_qk_norm=True,
        attention_bias=False, image_size=args.img_size, patch_size=args.patch,
        layer_scale_init_value=0.1, layer_norm_eps=1e-6)
    _randomize(InternVLVisionModel(cfg), args.seed).save_pretrained(out)


def write_timm(args, out):
    from timm.models.vision_transformer import VisionTransformer
    model = VisionTransformer(img_size=args.img_size, patch_size=args.patch,
                              embed_dim=args.width, depth=args.depth, num_heads=args.heads,
                              init_values=0.1, num_classes=0, dynamic_img_size=True)
    torch.save(_randomize(model, args.seed).state_dict(), out)


def _built_state_dict(cfg, prefix, seed):
    from mmengine.registry import MODELS
    return {f'{prefix}.{k}': v for k, v in _randomize(MODELS.build(cfg), seed).state_dict().items()}


def released_segmentation(args, linear):
    from mmengine.registry import init_default_scope
    import segmentation  # noqa: F401  (registers nothing we need here, loads mmseg)
    init_default_scope('mmseg')
    w, k = args.width, args.num_classes
    sd = {f'backbone.{n}': v for n, v in internvit_state_dict(args).items()}
    if linear:
        g = torch.Generator().manual_seed(args.seed + 1)
        sd.update({'decode_head.norm.weight': 1 + 0.1 * torch.randn(w, generator=g),
                   'decode_head.norm.bias': 0.1 * torch.randn(w, generator=g),
                   'decode_head.norm.running_mean': 0.1 * torch.randn(w, generator=g),
                   'decode_head.norm.running_var': 0.5 + torch.rand(w, generator=g),
                   'decode_head.norm.num_batches_tracked': torch.tensor(0),
                   'decode_head.conv_seg.weight': 0.02 * torch.randn(k, w, 1, 1, generator=g),
                   'decode_head.conv_seg.bias': torch.zeros(k)})
        return sd
    sd.update(_pyramid(args))
    bn = dict(type='BN', requires_grad=True)
    sd.update(_built_state_dict(dict(type='UPerHead', in_channels=[w] * 4, in_index=[0, 1, 2, 3],
                                     channels=16, num_classes=k, norm_cfg=bn), 'decode_head',
                                args.seed + 1))
    sd.update(_built_state_dict(dict(type='FCNHead', in_channels=w, in_index=2, channels=16,
                                     num_convs=1, concat_input=False, num_classes=k,
                                     norm_cfg=bn), 'auxiliary_head', args.seed + 2))
    return sd


def _pyramid(args):
    w = args.width
    g = torch.Generator().manual_seed(args.seed + 3)
    return {'backbone.up1.0.weight': 0.1 * torch.randn(w, w, 2, 2, generator=g),
            'backbone.up1.0.bias': torch.zeros(w),
            'backbone.up1.1.weight': torch.ones(w), 'backbone.up1.1.bias': torch.zeros(w),
            'backbone.up1.3.weight': 0.1 * torch.randn(w, w, 2, 2, generator=g),
            'backbone.up1.3.bias': torch.zeros(w),
            'backbone.up2.0.weight': 0.1 * torch.randn(w, w, 2, 2, generator=g),
            'backbone.up2.0.bias': torch.zeros(w)}


def released_detection(args):
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    import detection  # noqa: F401  (loads mmdet)
    init_default_scope('mmdet')
    import mmdet
    base = Config.fromfile(osp.join(osp.dirname(mmdet.__file__), '.mim', 'configs', '_base_',
                                    'models', 'mask-rcnn_r50_fpn.py')).model
    w, k = args.width, args.num_classes
    sd = {f'backbone.{n}': v for n, v in
          internvit_state_dict(args, with_cls_token=False, patch=16).items()}
    sd.update(_pyramid(args))
    neck = dict(base.neck, in_channels=[w] * 4)
    roi = base.roi_head
    roi.bbox_head.num_classes = roi.mask_head.num_classes = k
    sd.update(_built_state_dict(neck, 'neck', args.seed + 1))
    sd.update(_built_state_dict(dict(base.rpn_head, train_cfg=None, test_cfg=None), 'rpn_head',
                                args.seed + 2))
    sd.update(_built_state_dict(dict(roi, train_cfg=None, test_cfg=None), 'roi_head',
                                args.seed + 3))
    return sd


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog='\n'.join(__doc__.splitlines()[2:]))
    parser.add_argument('layout', choices=LAYOUTS, help='checkpoint layout to write')
    parser.add_argument('out', help='file (internvl, timm, released_*) or folder (hf_*)')
    parser.add_argument('--width', type=int, default=64, help='embed dims (default 64)')
    parser.add_argument('--depth', type=int, default=4, help='blocks (default 4)')
    parser.add_argument('--heads', type=int, default=4, help='attention heads (default 4)')
    parser.add_argument('--img-size', type=int, default=56,
                        help='pretraining image size: pos_embed grid img_size / patch (56)')
    parser.add_argument('--patch', type=int, default=14, help='patch size (default 14)')
    parser.add_argument('--num-classes', type=int, default=4, help='classes of the heads (4)')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--overwrite', action='store_true', help='replace an existing OUT')
    args = parser.parse_args(argv)
    if osp.exists(args.out) and not args.overwrite:
        parser.error(f'{args.out} exists; pass --overwrite to replace it')
    if args.width % args.heads:
        parser.error(f'--width {args.width} is not divisible by --heads {args.heads}')
    folder = osp.dirname(osp.abspath(args.out))
    os.makedirs(folder, exist_ok=True)
    if args.layout == 'internvl':
        torch.save(internvit_state_dict(args), args.out)
    elif args.layout == 'hf_remote':
        from safetensors.torch import save_file
        os.makedirs(args.out, exist_ok=True)
        sd = {k: v.contiguous() for k, v in to_hf_remote(internvit_state_dict(args)).items()}
        save_file(sd, osp.join(args.out, 'model.safetensors'), metadata={'format': 'pt'})
        with open(osp.join(args.out, 'config.json'), 'w') as f:
            json.dump(dict(architectures=['InternVisionModel'], hidden_size=args.width,
                           num_hidden_layers=args.depth, num_attention_heads=args.heads,
                           image_size=args.img_size, patch_size=args.patch), f, indent=2)
    elif args.layout == 'hf_native':
        write_hf_native(args, args.out)
    elif args.layout == 'timm':
        write_timm(args, args.out)
    elif args.layout == 'released_detection':
        torch.save(released_detection(args), args.out)
    else:
        torch.save(released_segmentation(args, linear=args.layout == 'released_linear'),
                   args.out)
    arch = tiny_arch(args, timm_style=args.layout == 'timm')
    print(f'wrote a tiny {args.layout} checkpoint to {args.out}')
    if args.layout in BACKBONE_LAYOUTS:
        print(f"load it with backbone=dict(type='InternViT', arch={arch}, "
              f"img_size={args.img_size}, patch_size={args.patch}, "
              f"init_cfg=dict(type='Pretrained', checkpoint='{args.out}'))")
    else:
        print(f'convert it with: python tools/model_converters/internvit2mmseg.py {args.out} '
              f'converted.pth')
    return 0


if __name__ == '__main__':
    sys.exit(main())
