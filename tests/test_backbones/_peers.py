"""Tiny real peers (transformers, timm) and writers of the published checkpoint layouts."""
import json
import os.path as osp

import torch
from safetensors.torch import save_file

WIDTH, DEPTH, HEADS = 64, 3, 4
PRETRAIN = 56  # 4x4 grid at patch 14


def tiny_arch(norm_type='rms_norm', qk_norm=True, qkv_bias=False):
    return dict(embed_dims=WIDTH, num_layers=DEPTH, num_heads=HEADS, mlp_ratio=4.0,
                norm_type=norm_type, qk_norm=qk_norm, qkv_bias=qkv_bias, layer_scale_init=0.1)


def randomize_(module, seed=0):
    """Every parameter random (peers zero their pos embeddings / biases at init)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(module.named_parameters()):
            if p.ndim == 1 and ('norm' in name or 'layernorm' in name):
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.02 * torch.randn(p.shape, generator=g))
    return module


def hf_native_model(norm_type='rms_norm', qk_norm=True, qkv_bias=False, seed=0):
    from transformers import InternVLVisionConfig, InternVLVisionModel
    cfg = InternVLVisionConfig(
        hidden_size=WIDTH, num_hidden_layers=DEPTH, num_attention_heads=HEADS,
        intermediate_size=4 * WIDTH, norm_type=norm_type, use_qk_norm=qk_norm,
        attention_bias=qkv_bias, image_size=PRETRAIN, patch_size=14, layer_scale_init_value=0.1,
        layer_norm_eps=1e-6, attn_implementation='eager')
    return randomize_(InternVLVisionModel(cfg).eval(), seed)


def hf_native_hidden(model, x, indices):
    with torch.no_grad():
        hs = model(pixel_values=x, output_hidden_states=True).hidden_states
    h, w = x.shape[-2] // 14, x.shape[-1] // 14
    return [hs[i + 1][:, 1:].transpose(1, 2).reshape(x.shape[0], WIDTH, h, w) for i in indices]


def timm_model(seed=0):
    from timm.models.vision_transformer import VisionTransformer
    m = VisionTransformer(img_size=PRETRAIN, patch_size=14, embed_dim=WIDTH, depth=DEPTH,
                          num_heads=HEADS, init_values=0.1, final_norm=False,
                          dynamic_img_size=True, num_classes=0)
    return randomize_(m.eval(), seed)


def timm_hidden(model, x, indices):
    with torch.no_grad():
        return model.forward_intermediates(x, indices=list(indices), output_fmt='NCHW',
                                           intermediates_only=True)


# ---------------------------------------------------------------- layout writers
def to_hf_remote(sd):
    """Our (original InternVL) names -> OpenGVLab's remote-code InternVisionModel names."""
    out = {}
    for k, v in sd.items():
        if k == 'cls_token':
            out['embeddings.class_embedding'] = v
        elif k == 'pos_embed':
            out['embeddings.position_embedding'] = v
        elif k.startswith('patch_embed.proj.'):
            out['embeddings.patch_embedding.' + k.split('.')[-1]] = v
        else:
            k = k.replace('blocks.', 'encoder.layers.', 1).replace('.gamma', '')
            out[k] = v
    return out


def save_sharded(sd, folder, n_shards=2):
    keys = sorted(sd)
    weight_map = {}
    for i in range(n_shards):
        name = f'model-{i + 1:05d}-of-{n_shards:05d}.safetensors'
        part = {k: sd[k].contiguous() for k in keys[i::n_shards]}
        save_file(part, osp.join(folder, name))
        weight_map.update({k: name for k in part})
    index = osp.join(folder, 'model.safetensors.index.json')
    with open(index, 'w') as f:
        json.dump({'metadata': {}, 'weight_map': weight_map}, f)
    return index
