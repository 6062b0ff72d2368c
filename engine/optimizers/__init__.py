"""Optimizer-wrapper constructors."""
from .layer_decay import InternViTLayerDecayOptimizerConstructor

__all__ = ['InternViTLayerDecayOptimizerConstructor']
