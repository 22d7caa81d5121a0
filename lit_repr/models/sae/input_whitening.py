"""A sparse autoencoder on whitened inputs: installing, checking and restoring its :class:`PCAWhitening`.

One mechanism serves every way a whitening reaches a :class:`~lit_repr.models.sae.SparseAutoencoder`:
the argument ``whitening=``, the :class:`~lit_repr.callbacks.Whitening` callback (which sets
``sae.whitening = fitted``) and a checkpoint. Setting the attribute runs :func:`check_whitening`
first, so a whitening of the wrong width or an unfitted one is refused before anything changes.
The whitening is a submodule: its buffers and configuration (``whitening.mean``,
``whitening.eigenvalues``, ``whitening.eigenvectors``, ``whitening.config``, ...) travel in the
SAE's ``state_dict``, and loading such a ``state_dict`` into an SAE without a whitening installs one
(:func:`whitening_from_state_dict`), so ``load_from_checkpoint`` and resumed runs need nothing more.

Spaces: the dictionary, the codes' encoder and the decoder bias live in the whitened space, of width
``in_features == whitening.out_features``; inputs and the public outputs (``forward``, ``decode``)
are in the original space, of width ``whitening.in_features``. The reconstruction loss is computed in
the whitened space (``loss_space="whitened"``) or mapped back through the exact
:meth:`~lit_repr.models.whitening.PCAWhitening.inverse` (``loss_space="original"``).
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from lit_repr.metrics.sae import FractionOfVarianceExplained
from lit_repr.models.whitening import PCAWhitening

__all__ = ["LOSS_SPACES", "WhitenedInputs", "check_whitening", "whitening_from_state_dict", "input_space_atoms"]

#: where the reconstruction loss of a whitened sparse autoencoder is measured
LOSS_SPACES = ("whitened", "original")

PREFIX = "whitening."


def check_whitening(whitening: Any, in_features: int) -> None:
    """Raise ``ValueError`` unless ``whitening`` is ``None`` or a fitted :class:`PCAWhitening` whose output
    width equals the SAE's ``in_features`` (the width of its dictionary).

    Example:
        >>> import torch
        >>> w = PCAWhitening.from_data(torch.randn(40, 3))
        >>> check_whitening(w, 3)
        >>> check_whitening(w, 4)
        Traceback (most recent call last):
        ...
        ValueError: whitening.out_features=3 (a whitening of 3 input features) must equal ... in_features=4: ...
    """
    if whitening is None:
        return
    if not isinstance(whitening, PCAWhitening):
        raise ValueError(f"whitening must be a fitted lit_repr.models.PCAWhitening or None, got "
                         f"{type(whitening).__name__}")
    if not bool(whitening.fitted):
        raise ValueError("whitening must be fitted (PCAWhitening.fit or PCAWhitening.from_data) before the "
                         "SparseAutoencoder uses it; or leave whitening=None and add the Whitening callback")
    if whitening.out_features != in_features:
        raise ValueError(
            f"whitening.out_features={whitening.out_features} (a whitening of {whitening.in_features} input "
            f"features) must equal the SparseAutoencoder's in_features={in_features}: the dictionary lives in the "
            f"whitened space; build the SAE with in_features={whitening.out_features}"
        )


def whitening_from_state_dict(state_dict: dict[str, Any], prefix: str = PREFIX) -> PCAWhitening | None:
    """The whitening saved in an SAE's ``state_dict`` (keys under ``prefix``), or ``None`` if it has none.

    Example:
        >>> import torch
        >>> w = PCAWhitening.from_data(torch.randn(40, 3), kind="pca")
        >>> sd = {"whitening." + k: v for k, v in w.state_dict().items()}
        >>> whitening_from_state_dict(sd).kind, whitening_from_state_dict({}) is None
        ('pca', True)
    """
    if not any(k.startswith(prefix) for k in state_dict):
        return None
    return PCAWhitening.from_state_dict(state_dict, prefix)


def input_space_atoms(W_dec: Tensor, whitening: PCAWhitening | None) -> Tensor:
    """The dictionary's atoms as directions of the original input space: ``W_dec W⁺ᵀ`` (``W⁺``:
    :attr:`~lit_repr.models.whitening.PCAWhitening.inverse_matrix`); ``W_dec`` itself without whitening.

    Example:
        >>> import torch
        >>> w = PCAWhitening.from_data(torch.randn(40, 3) * torch.tensor([1.0, 2.0, 4.0]))
        >>> atoms = torch.eye(3)
        >>> bool(torch.allclose(input_space_atoms(atoms, w), w.inverse(atoms) - w.inverse(torch.zeros(3)), atol=1e-5))
        True
    """
    if whitening is None:
        return W_dec
    m = whitening.inverse_matrix.to(W_dec.device)
    return (W_dec.to(m.dtype) @ m.T).to(W_dec.dtype)


class WhitenedInputs(nn.Module):
    """The input-whitening part of :class:`~lit_repr.models.sae.SparseAutoencoder` (a base class).

    It owns the submodule ``whitening`` (``None`` or a fitted :class:`PCAWhitening`): setting it checks
    it (:func:`check_whitening`, against ``in_features``) before anything changes and creates the
    original-space FVE metrics (``original_fve``); loading a ``state_dict`` that holds a whitening
    installs it. The class using it defines ``in_features``, ``W_dec`` and ``_prepare_input`` (which
    checks inputs of width :attr:`input_features`), and calls :meth:`_init_whitening` in ``__init__``.

    Example:
        >>> import torch
        >>> from lit_repr.models.sae import SparseAutoencoder
        >>> sae = SparseAutoencoder(3, 6)
        >>> sae.whitening = PCAWhitening.from_data(torch.randn(50, 3))
        >>> sae.input_features, sorted(sae.original_fve)
        (3, ['test_fve', 'train_fve', 'val_fve'])
    """

    in_features: int
    W_dec: Tensor

    def _init_whitening(self, whitening: PCAWhitening | None) -> None:
        #: FVE in the original space per stage (with a whitening; the SAE's own FVE is the whitened space's)
        self.original_fve = nn.ModuleDict()
        self.register_module("whitening", None)
        self.whitening = whitening

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "whitening":  # every way a whitening arrives (argument, callback, checkpoint) passes here
            check_whitening(value, self.in_features)
            super().__setattr__(name, value)
            stages = ("train", "val", "test") if value is not None else ()
            self.original_fve = nn.ModuleDict(
                {f"{s}_fve": FractionOfVarianceExplained(value.in_features) for s in stages}
            ).to(self.W_dec.device)
            return
        super().__setattr__(name, value)

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any:
        """``nn.Module.load_state_dict``; a ``state_dict`` holding a whitening installs it first if none is set."""
        if self.whitening is None:
            whitening = whitening_from_state_dict(state_dict)
            if whitening is not None:
                self.whitening = whitening.to(self.W_dec.device)
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    @property
    def input_features(self) -> int:
        """Width of the inputs: ``whitening.in_features`` with a whitening, else ``in_features``."""
        return self.whitening.in_features if self.whitening is not None else self.in_features

    def input_space_atoms(self) -> Tensor:
        """The atoms as directions of the input space (``W_dec`` itself without whitening)."""
        return input_space_atoms(self.W_dec, self.whitening)

    def _inputs(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The checked input and what the dictionary reads: its whitening (or the input itself)."""
        x = self._prepare_input(x)
        return x, (self.whitening(x) if self.whitening is not None else x)

    def _to_input_space(self, recon: Tensor) -> Tensor:
        return self.whitening.inverse(recon) if self.whitening is not None else recon
