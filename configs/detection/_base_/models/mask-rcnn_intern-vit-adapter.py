# Mask R-CNN on InternViT with a ViT-Adapter (InternViTAdapter): the adapter already returns
# four maps of embed_dims channels at strides 4, 8, 16 and 32 of the input, so FPN (plus its
# max-pooled P6, stride 64) and the usual anchor / RoI strides apply unchanged.
#
# Patch 16 (as the ViT-Adapter recipe): the patch-14 stem of the published weights is resampled
# on load and a 1024 crop is a 64x64 token grid. The interactions split the 48 blocks in four;
# SPM and output norms are BN, which the runner turns into SyncBN when training is distributed
# (`sync_bn = 'torch'`) and keeps as BN in one process.
#
# Everything else (data preprocessor, RPN, RoI heads, train/test settings) is the ViTDet-style
# model's (mask-rcnn_intern-vit_vitdet.py); only the backbone, the neck and the strides change.
_base_ = ['./mask-rcnn_intern-vit_vitdet.py']

head_norm_cfg = dict(type='GN', num_groups=32, requires_grad=True)
pyramid_strides = [4, 8, 16, 32]
sync_bn = 'torch'

model = dict(
    backbone=dict(
        _delete_=True,
        type='InternViTAdapter',
        arch='6b',
        img_size=1024,
        patch_size=16,
        interaction_indexes=[[0, 11], [12, 23], [24, 35], [36, 47]],
        cffn_ratio=0.25,
        deform_ratio=0.25,
        n_points=4,
        drop_path_rate=0.0,
        with_cp=True,
        norm_cfg=dict(type='BN')),
    neck=dict(
        _delete_=True,
        type='FPN',
        in_channels=[3200, 3200, 3200, 3200],
        out_channels=256,
        num_outs=5,
        norm_cfg=head_norm_cfg),
    rpn_head=dict(anchor_generator=dict(strides=pyramid_strides + [64], base_sizes=None)),
    roi_head=dict(
        bbox_roi_extractor=dict(featmap_strides=pyramid_strides),
        mask_roi_extractor=dict(featmap_strides=pyramid_strides)))
