"""Each segmentation config folder documents its configs: README.md and metafile.yaml list
every config, the weights it loads and the reference mIoU where there is one."""
import glob
import os.path as osp

import pytest
import yaml
from mmengine.config import Config

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
SEG = osp.join(ROOT, 'configs', 'segmentation')
FOLDERS = sorted({osp.dirname(p) for p in glob.glob(osp.join(SEG, '*', '*', '*.py'))} |
                 {osp.dirname(p) for p in glob.glob(osp.join(SEG, '*', '*.py'))})
FOLDERS = [f for f in FOLDERS if osp.basename(f) != 'vit_adapter']
# DESIGN.md, "Reference recipes" (InternViT-6B, ADE20K).
REFERENCE = {
    'intern_vit_6b/linear_probing/linear_intern-vit-6b_8xb2-80k_ade20k-504x504': 47.2,
    'intern_vit_6b/head_tuning/upernet_intern-vit-6b_8xb2-80k_ade20k-504x504': 54.9,
    'intern_vit_6b/full_tuning/upernet_intern-vit-6b_8xb2-80k_ade20k-504x504': 58.9,
    'intern_vit_6b/few_shot/linear_intern-vit-6b_8xb2-5k_ade20k-1of16-504x504': 46.5,
    'intern_vit_6b/few_shot/linear_intern-vit-6b_8xb2-10k_ade20k-1of8-504x504': 50.0,
    'intern_vit_6b/few_shot/linear_intern-vit-6b_8xb2-20k_ade20k-1of4-504x504': 53.3,
    'intern_vit_6b/few_shot/linear_intern-vit-6b_8xb2-40k_ade20k-1of2-504x504': 55.8,
    'intern_vit_6b/few_shot/linear_intern-vit-6b_8xb2-80k_ade20k-1of1-504x504': 57.2,
}


def test_folders():
    assert len(FOLDERS) == 20  # 6B: 4 recipes; 448px: 4 x 3; 300M: 3; swap_examples


@pytest.mark.parametrize('folder', FOLDERS, ids=lambda f: osp.relpath(f, SEG))
def test_readme_and_metafile(folder):
    configs = sorted(osp.basename(p)[:-3] for p in glob.glob(osp.join(folder, '*.py')))
    with open(osp.join(folder, 'README.md')) as f:
        readme = f.read()
    with open(osp.join(folder, 'metafile.yaml')) as f:
        meta = yaml.safe_load(f)
    models = {m['Name']: m for m in meta['Models']}
    assert sorted(models) == configs
    rel = osp.relpath(folder, ROOT)
    for name, model in models.items():
        assert name in readme
        assert model['Config'] == f'{rel}/{name}.py'
        cfg = Config.fromfile(osp.join(ROOT, model['Config']))
        assert model['Metadata']['Pretrained Weights'] == \
            cfg.model.backbone.init_cfg.checkpoint
        assert model['Metadata']['Pretrained Weights'] in readme
        key = f'{osp.relpath(folder, SEG)}/{name}'
        if key in REFERENCE:
            assert model['Results']['Metrics']['mIoU'] == REFERENCE[key]
            assert f'| {REFERENCE[key]} |' in readme
        else:
            assert 'Results' not in model
