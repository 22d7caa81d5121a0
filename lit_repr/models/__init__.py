"""LightningModules: the models this research trains and reads (and the SAE's swappable encoders)."""

from lit_repr.models.backbones import MLP, build_backbone
from lit_repr.models.classifier import Classifier
from lit_repr.models.diet import DIET
from lit_repr.models.encoders import (
    ENCODERS,
    AmortizedEncoder,
    FISTAEncoder,
    InferenceTimeOptimization,
    ISTAEncoder,
    MLPEncoder,
    SparseEncoder,
)
from lit_repr.models.sae import (
    SAE_VARIANTS,
    BatchTopKVariant,
    JumpReLUVariant,
    ReLUVariant,
    SAEVariant,
    SparseAutoencoder,
    TopKVariant,
    register_variant,
)
from lit_repr.models.two_layer import TwoLayerNetwork
from lit_repr.models.whitening import WHITENING_KINDS, PCAWhitening, fold_whitening
from lit_repr.models.world_model import SEQUENCE_ENCODERS, WorldModel

__all__ = [
    "MLP", "build_backbone", "Classifier", "DIET",
    "SparseAutoencoder", "SAE_VARIANTS", "register_variant",
    "SAEVariant", "ReLUVariant", "TopKVariant", "BatchTopKVariant", "JumpReLUVariant",
    "SparseEncoder", "AmortizedEncoder", "MLPEncoder", "ISTAEncoder", "FISTAEncoder", "InferenceTimeOptimization",
    "ENCODERS",
    "TwoLayerNetwork",
    "PCAWhitening", "WHITENING_KINDS", "fold_whitening",
    "WorldModel", "SEQUENCE_ENCODERS",
]
