# Runtime shared by the segmentation configs (mmseg 1.x, MMEngine Runner).
default_scope = 'mmseg'
# Our code (InternViT, SimpleFeaturePyramid, layer decay, linear head, few-shot subsets) is
# switched on by importing these packages; nothing is patched.
custom_imports = dict(imports=['backbones', 'engine', 'segmentation'], allow_failed_imports=False)
env_cfg = dict(
    cudnn_benchmark=True,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    dist_cfg=dict(backend='nccl'),
)
vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(type='SegLocalVisualizer', vis_backends=vis_backends, name='visualizer')
log_processor = dict(by_epoch=False)
log_level = 'INFO'
load_from = None
resume = False
tta_model = dict(type='SegTTAModel')
