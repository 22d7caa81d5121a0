"""Sparse autoencoders: numerical kernels, variants (a registry), the LightningModule and its figures.

- :mod:`~lit_repr.models.sae.kernels`: sparse TopK autograd, straight-through estimators, AuxK, geometric median;
- :mod:`~lit_repr.models.sae.variants`: :class:`SAEVariant`, the built-in variants, :data:`SAE_VARIANTS`
  and :func:`register_variant`;
- :mod:`~lit_repr.models.sae.module`: :class:`SparseAutoencoder` and :func:`flops_per_sample`;
- :mod:`~lit_repr.models.sae.figures`: atoms as images, firing-frequency histograms.
"""

from lit_repr.models.sae.figures import atom_figure
from lit_repr.models.sae.kernels import (
    auxk_loss,
    geometric_median,
    heaviside_step,
    jump_relu,
    sparse_decode,
    topk_encode,
)
from lit_repr.models.sae.module import SparseAutoencoder, flops_per_sample
from lit_repr.models.sae.variants import (
    SAE_VARIANTS,
    BatchTopKVariant,
    JumpReLUVariant,
    ReLUVariant,
    SAEVariant,
    TopKVariant,
    build_variant,
    register_variant,
    variant_arguments,
)

__all__ = [
    "SparseAutoencoder",
    "flops_per_sample",
    "SAEVariant",
    "ReLUVariant",
    "TopKVariant",
    "BatchTopKVariant",
    "JumpReLUVariant",
    "SAE_VARIANTS",
    "register_variant",
    "build_variant",
    "variant_arguments",
    "auxk_loss",
    "geometric_median",
    "topk_encode",
    "sparse_decode",
    "jump_relu",
    "heaviside_step",
    "atom_figure",
]
