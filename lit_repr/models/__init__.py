"""LightningModules: the models this research trains and reads."""

from lit_repr.models.backbones import MLP, build_backbone
from lit_repr.models.classifier import Classifier
from lit_repr.models.diet import DIET

__all__ = ["MLP", "build_backbone", "Classifier", "DIET"]
