"""LightningModules: the models this research trains and reads (and the SAE's swappable encoders)."""

from lit_repr.models.backbones import MLP, build_backbone
from lit_repr.models.classifier import Classifier
from lit_repr.models.diet import DIET
from lit_repr.models.encoders import (
    ENCODERS,
    AmortisedEncoder,
    FISTAEncoder,
    InferenceTimeOptimisation,
    ISTAEncoder,
    MLPEncoder,
    SparseEncoder,
)
from lit_repr.models.sae import SAE_VARIANTS, SparseAutoencoder, register_variant
from lit_repr.models.two_layer import TwoLayerNetwork

__all__ = [
    "MLP", "build_backbone", "Classifier", "DIET",
    "SparseAutoencoder", "SAE_VARIANTS", "register_variant",
    "SparseEncoder", "AmortisedEncoder", "MLPEncoder", "ISTAEncoder", "FISTAEncoder", "InferenceTimeOptimisation",
    "ENCODERS",
    "TwoLayerNetwork",
]
