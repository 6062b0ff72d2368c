"""InternViT dense prediction: backbones (model code), engine (training engine), segmentation
and detection glue.

torch and mmcv (with compiled ops) are installed by ``make setup`` (tools/install.sh), which
builds mmcv against the installed torch; see requirements/ for every pin.
"""
from setuptools import find_packages, setup


def read_requirements(path):
    with open(path) as f:
        return [line.split('#')[0].strip() for line in f
                if line.split('#')[0].strip()]


setup(
    name='internvit-dense',
    version='0.1.0',
    description='InternViT-6B / 300M for semantic segmentation and detection on OpenMMLab 2.x',
    packages=find_packages(include=['backbones', 'backbones.*', 'engine', 'engine.*', 'segmentation',
                                    'segmentation.*', 'detection', 'detection.*']),
    python_requires='>=3.9',
    install_requires=read_requirements('requirements/runtime.txt'),
    extras_require={'tests': read_requirements('requirements/tests.txt'),
                    'distributed': read_requirements('requirements/distributed.txt')},
)
