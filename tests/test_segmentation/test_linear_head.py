"""InternViTLinearHead: BN + 1x1 classifier on top of mmseg's BaseDecodeHead."""
import pytest
import torch
import torch.nn as nn
from mmengine.config import ConfigDict
from mmengine.structures import PixelData
from mmseg.structures import SegDataSample

import backbones  # noqa: F401  (registers InternViT)
from segmentation import InternViTLinearHead

TINY = dict(embed_dims=32, num_layers=2, num_heads=2, mlp_ratio=2.0, norm_type='rms_norm',
            qk_norm=True, qkv_bias=False, layer_scale_init=0.1)


def _samples(n, hw, num_classes):
    out = []
    for _ in range(n):
        s = SegDataSample()
        s.gt_sem_seg = PixelData(data=torch.randint(0, num_classes, (1, *hw)))
        s.set_metainfo(dict(img_shape=hw, pad_shape=hw, ori_shape=hw))
        out.append(s)
    return out


def test_structure_is_bn_then_1x1_classifier_without_dropout():
    head = InternViTLinearHead(in_channels=32, in_index=0, num_classes=5)
    assert isinstance(head.bn, nn.BatchNorm2d) and head.bn.num_features == 32
    assert head.dropout is None
    assert head.conv_seg.kernel_size == (1, 1) and head.conv_seg.in_channels == 32
    assert head.conv_seg.out_channels == 5


def test_forward_keeps_the_feature_resolution():
    head = InternViTLinearHead(in_channels=32, in_index=0, num_classes=5)
    out = head([torch.randn(2, 32, 4, 6)])
    assert out.shape == (2, 5, 4, 6)


def test_loss_and_gradients():
    head = InternViTLinearHead(in_channels=32, in_index=0, num_classes=5)
    losses = head.loss([torch.randn(2, 32, 4, 4)], _samples(2, (56, 56), 5), train_cfg={})
    assert set(losses) == {'loss_ce', 'acc_seg'}
    assert losses['loss_ce'].ndim == 0 and torch.isfinite(losses['loss_ce'])
    losses['loss_ce'].backward()
    assert all(p.grad is not None for p in head.parameters())


def test_predict_upsamples_to_the_image():
    head = InternViTLinearHead(in_channels=32, in_index=0, num_classes=5).eval()
    logits = head.predict([torch.randn(1, 32, 4, 4)],
                          [dict(img_shape=(56, 56), pad_shape=(56, 56))], test_cfg={})
    assert logits.shape == (1, 5, 56, 56)


def test_resize_concat_of_several_blocks():
    head = InternViTLinearHead(in_channels=[32, 32], in_index=[0, 1],
                               input_transform='resize_concat', num_classes=3)
    assert head.bn.num_features == 64
    out = head([torch.randn(1, 32, 4, 4), torch.randn(1, 32, 2, 2)])
    assert out.shape == (1, 3, 4, 4)


def test_argument_checks_and_syncbn_option():
    with pytest.raises(ValueError, match='channels must equal'):
        InternViTLinearHead(in_channels=32, channels=16, in_index=0, num_classes=3)
    with pytest.raises(ValueError, match='resize_concat'):
        InternViTLinearHead(in_channels=[32, 32], in_index=[0, 1], num_classes=3)
    head = InternViTLinearHead(in_channels=8, in_index=0, num_classes=3,
                               norm_cfg=dict(type='SyncBN', requires_grad=True))
    assert isinstance(head.bn, nn.SyncBatchNorm)


def test_in_an_encoder_decoder_with_intern_vit():
    from mmseg.registry import MODELS
    from mmseg.utils import register_all_modules
    register_all_modules(init_default_scope=True)
    model = MODELS.build(ConfigDict(
        type='EncoderDecoder',
        data_preprocessor=dict(type='SegDataPreProcessor', mean=[0., 0., 0.],
                               std=[1., 1., 1.], size=(56, 56)),
        backbone=dict(type='InternViT', arch=TINY, img_size=56, out_indices=[1], frozen=True),
        decode_head=dict(type='InternViTLinearHead', in_channels=32, in_index=0,
                         num_classes=4),
        test_cfg=dict(mode='whole')))
    model.init_weights()
    inputs = torch.randn(2, 3, 56, 56)
    losses = model.loss(inputs, _samples(2, (56, 56), 4))
    assert torch.isfinite(losses['decode.loss_ce'])
    model.eval()
    preds = model.predict(inputs, _samples(2, (56, 56), 4))
    assert preds[0].pred_sem_seg.data.shape == (1, 56, 56)
