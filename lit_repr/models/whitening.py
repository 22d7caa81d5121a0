"""PCA and ZCA whitening of inputs, fitted from streaming float64 moments.

With mean ``μ`` and covariance ``C = E Λ Eᵀ`` (eigenvalues descending), :class:`PCAWhitening` maps

- ``kind="pca"``: ``z = (Λ + eps)^{-1/2} Eᵀ (x − μ)`` (optionally on the leading ``out_features``
  components only),
- ``kind="zca"``: ``z = E (Λ + eps)^{-1/2} Eᵀ (x − μ)`` (the whitening closest to the identity),

so that the covariance of ``z`` is ``Λ / (Λ + eps)``: the identity up to ``eps``. Whitening the inputs
of a sparse autoencoder is studied by Saraswatula & Klindt (2025, arXiv:2511.13981).
"""

from __future__ import annotations

import copy
import warnings
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import Tensor, nn

from lit_repr.metrics.covariance import CovarianceMoments

if TYPE_CHECKING:
    from lit_repr.models.sae import SparseAutoencoder

__all__ = ["PCAWhitening", "WHITENING_KINDS", "fold_whitening"]

WHITENING_KINDS = ("pca", "zca")


class PCAWhitening(nn.Module):
    """PCA or ZCA whitening ``x ↦ W (x − μ)`` with an exact inverse, fitted from streamed moments.

    The buffers ``mean`` (``(D,)``), ``eigenvalues`` (``(D,)``, descending), ``eigenvectors``
    (``(D, D)``, one per column) and ``config`` (the arguments, so that :meth:`from_state_dict` rebuilds
    the module) are float64 and travel in ``state_dict``. The output has the input's
    dtype. :meth:`fit` takes a :class:`~lit_repr.metrics.covariance.CovarianceMoments` (under DDP its
    states are summed over processes, so every process fits the same whitening) or a data tensor;
    :meth:`from_data` builds and fits in one call.

    :meth:`inverse` undoes :meth:`forward` exactly when ``out_features == in_features``. With
    ``out_features < in_features`` (PCA reduction) it maps back into input space along the kept
    components: ``inverse(forward(x))`` is the projection of ``x − μ`` onto the leading
    ``out_features`` principal directions, plus ``μ``.

    A rank-deficient covariance (e.g. fewer samples than dimensions) is regularised by ``eps``
    and a warning says how many eigenvalues fall below it; with ``eps=0`` it is an error.

    Args:
        in_features: the input dimension ``D``.
        kind: ``"pca"`` (rotate to principal axes, then scale) or ``"zca"`` (rotate back after scaling).
        eps: added to every eigenvalue before the inverse square root (``>= 0``).
        out_features: keep only the leading ``out_features`` principal components (``"pca"`` only);
            default all ``in_features``.

    Example:
        >>> _ = torch.manual_seed(0)
        >>> x = torch.randn(500, 3, dtype=torch.float64) @ torch.tensor([[2.0, 0, 0], [1, 1, 0], [0, 0, 0.5]]).double()
        >>> w = PCAWhitening.from_data(x, kind="zca", eps=0.0)
        >>> z = w(x)
        >>> bool(torch.allclose(z.T.cov(correction=0), torch.eye(3, dtype=torch.float64), atol=1e-9))
        True
        >>> bool(torch.allclose(w.inverse(z), x))
        True
    """

    mean: Tensor
    eigenvalues: Tensor
    eigenvectors: Tensor
    fitted: Tensor
    config: Tensor

    def __init__(
        self,
        in_features: int,
        kind: Literal["pca", "zca"] = "zca",
        eps: float = 1e-6,
        out_features: int | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(in_features, int) or isinstance(in_features, bool) or in_features < 1:
            raise ValueError(f"in_features must be a positive int, got {in_features!r}")
        if kind not in WHITENING_KINDS:
            raise ValueError(f"kind must be one of {WHITENING_KINDS}, got {kind!r}")
        if not isinstance(eps, (int, float)) or isinstance(eps, bool) or not eps >= 0 or eps == float("inf"):
            raise ValueError(f"eps must be a finite number >= 0, got {eps!r}")
        if out_features is not None:
            if kind == "zca":
                raise ValueError(
                    f"out_features={out_features!r} reduces dimension, which only kind='pca' allows (got kind='zca'); "
                    "use kind='pca' or out_features=None"
                )
            valid = isinstance(out_features, int) and not isinstance(out_features, bool)
            if not valid or not 1 <= out_features <= in_features:
                raise ValueError(f"out_features must be an int in [1, in_features={in_features}], got {out_features!r}")
        self.in_features = in_features
        self.kind = kind
        self.eps = float(eps)
        self.out_features = in_features if out_features is None else out_features
        f64 = torch.float64
        self.register_buffer("mean", torch.zeros(in_features, dtype=f64))
        self.register_buffer("eigenvalues", torch.ones(in_features, dtype=f64))
        self.register_buffer("eigenvectors", torch.eye(in_features, dtype=f64))
        self.register_buffer("fitted", torch.tensor(False))
        #: ``[in_features, out_features, kind (index in WHITENING_KINDS), eps]``: the state_dict rebuilds the module
        self.register_buffer("config", self._config())

    def _config(self) -> Tensor:
        return torch.tensor([self.in_features, self.out_features, WHITENING_KINDS.index(self.kind), self.eps],
                            dtype=torch.float64)

    @staticmethod
    def _describe(config: Tensor) -> str:
        d, k, kind, eps = config.tolist()
        return f"in_features={int(d)}, out_features={int(k)}, kind={WHITENING_KINDS[int(kind)]!r}, eps={eps:g}"

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        saved = state_dict.get(prefix + "config")
        if saved is not None and not torch.equal(torch.as_tensor(saved).cpu().double(), self._config()):
            raise ValueError(f"the state_dict is of a whitening with {self._describe(torch.as_tensor(saved))}, this "
                             f"PCAWhitening has {self._describe(self._config())}; build it with "
                             "PCAWhitening.from_state_dict(state_dict)")
        super()._load_from_state_dict(state_dict, prefix, *args)

    @classmethod
    def from_state_dict(cls, state_dict: dict[str, Any], prefix: str = "") -> "PCAWhitening":
        """A whitening rebuilt from a ``state_dict`` (its configuration travels in the buffer ``<prefix>config``).

        Example:
            >>> w = PCAWhitening.from_data(torch.randn(50, 3), kind="pca", out_features=2)
            >>> w2 = PCAWhitening.from_state_dict(w.state_dict())
            >>> w2.out_features, bool(torch.equal(w2.matrix, w.matrix))
            (2, True)
        """
        config = state_dict.get(prefix + "config")
        if config is None or torch.as_tensor(config).shape != (4,):
            raise ValueError(f"the state_dict has no PCAWhitening configuration at {prefix + 'config'!r} "
                             f"(keys: {sorted(k for k in state_dict if k.startswith(prefix))})")
        d, k, kind, eps = torch.as_tensor(config).tolist()
        w = cls(int(d), kind=WHITENING_KINDS[int(kind)], eps=eps, out_features=None if k == d else int(k))
        w.load_state_dict({k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)})
        return w

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, kind={self.kind!r}, eps={self.eps}"

    @classmethod
    def from_data(
        cls, x: Tensor, kind: Literal["pca", "zca"] = "zca", eps: float = 1e-6, out_features: int | None = None
    ) -> "PCAWhitening":
        """A whitening fitted on the rows of ``x`` (shape ``(N, D)``)."""
        x = torch.as_tensor(x)
        if x.ndim != 2:
            raise ValueError(f"x must have shape (N, D), got shape {tuple(x.shape)}")
        return cls(int(x.shape[1]), kind=kind, eps=eps, out_features=out_features).fit(x)

    @torch.no_grad()
    def fit(self, data: CovarianceMoments | Tensor) -> "PCAWhitening":
        """Fit to a :class:`CovarianceMoments` (its ``compute()`` syncs under DDP) or to data ``(N, D)``.

        Nothing is changed if the data are bad (wrong dimension, non-finite, no samples).
        """
        if isinstance(data, CovarianceMoments):
            moments = data
        else:
            moments = CovarianceMoments(self.in_features)
            moments.update(data)
        if moments.num_features != self.in_features:
            raise ValueError(
                f"moments have num_features={moments.num_features}, but this whitening has "
                f"in_features={self.in_features}; they must be equal"
            )
        mean, cov = moments.compute()
        n = int(round(float(moments.n)))
        if not (torch.isfinite(mean).all() and torch.isfinite(cov).all()):
            raise ValueError("the moments are not finite (NaN or infinite); the whitening is left unchanged")
        evals, evecs = torch.linalg.eigh(cov)
        evals, evecs = evals.flip(0).clamp_min(0), evecs.flip(1)
        # a deterministic sign per eigenvector: its largest-magnitude entry is positive
        idx = evecs.abs().argmax(0)
        signs = torch.sign(evecs[idx, torch.arange(evecs.shape[1])])
        evecs = evecs * torch.where(signs == 0, torch.ones_like(signs), signs)
        tol = max(self.eps, float(evals[0]) * self.in_features * torch.finfo(torch.float64).eps)
        num_small = int((evals[: self.out_features] < tol).sum())
        if num_small and self.eps == 0:
            raise ValueError(
                f"the covariance ({n} samples, {self.in_features} dimensions) has {num_small} zero eigenvalue(s) "
                "among the kept components, and eps=0 cannot regularise them; pass eps > 0 or reduce out_features"
            )
        if num_small or n < self.in_features:
            warnings.warn(
                f"PCAWhitening: the covariance from {n} samples in {self.in_features} dimensions is rank-deficient "
                f"or ill-conditioned: {num_small} of {self.out_features} kept eigenvalues are below eps={self.eps:g}. "
                f"eps regularises them (scale 1/sqrt(eigenvalue + eps)); those directions are not whitened to unit "
                "variance",
                UserWarning,
                stacklevel=3,
            )
        self.mean.copy_(mean)
        self.eigenvalues.copy_(evals)
        self.eigenvectors.copy_(evecs)
        self.fitted.fill_(True)
        return self

    def _check_fitted(self) -> None:
        if not bool(self.fitted):
            raise RuntimeError("PCAWhitening is not fitted; call fit(moments) or PCAWhitening.from_data(x) first")

    @property
    def matrix(self) -> Tensor:
        """The whitening matrix ``W`` (``(out_features, in_features)``, float64): ``z = W (x − μ)``."""
        k = self.out_features
        scale = (self.eigenvalues[:k] + self.eps).rsqrt()
        w = scale[:, None] * self.eigenvectors[:, :k].T
        return self.eigenvectors @ w if self.kind == "zca" else w

    @property
    def inverse_matrix(self) -> Tensor:
        """``W⁺`` (``(in_features, out_features)``, float64): ``x = μ + W⁺ z`` (exact for full rank)."""
        k = self.out_features
        m = self.eigenvectors[:, :k] * (self.eigenvalues[:k] + self.eps).sqrt()
        return m @ self.eigenvectors.T if self.kind == "zca" else m

    def _check_input(self, x: Tensor, width: int, name: str) -> None:
        if x.ndim < 1 or x.shape[-1] != width:
            raise ValueError(f"{name} must have last dimension {width}, got shape {tuple(x.shape)}")

    def forward(self, x: Tensor) -> Tensor:
        """Whiten ``x`` of shape ``(..., in_features)``; returns ``(..., out_features)`` in ``x``'s dtype."""
        self._check_fitted()
        self._check_input(x, self.in_features, "x")
        dtype = x.dtype if x.is_floating_point() else torch.get_default_dtype()
        w = self.matrix
        return ((x.to(w.dtype) - self.mean) @ w.T).to(dtype)

    def inverse(self, z: Tensor) -> Tensor:
        """Map whitened ``z`` (``(..., out_features)``) back to input space (see the class docstring)."""
        self._check_fitted()
        self._check_input(z, self.out_features, "z")
        dtype = z.dtype if z.is_floating_point() else torch.get_default_dtype()
        m = self.inverse_matrix
        return (z.to(m.dtype) @ m.T + self.mean).to(dtype)

    @torch.no_grad()
    def identity_deviation(self, moments: CovarianceMoments) -> float:
        """``max |C_white − I|``: how far the whitened covariance of the data in ``moments`` is from the identity."""
        self._check_fitted()
        _, cov = moments.compute()
        w = self.matrix
        cw = w @ cov @ w.T
        return float((cw - torch.eye(self.out_features, dtype=cw.dtype, device=cw.device)).abs().max())


@torch.no_grad()
def fold_whitening(sae: "SparseAutoencoder", whitening: PCAWhitening | None = None) -> "SparseAutoencoder":
    """A new SAE on raw inputs equal to ``whitening.inverse ∘ sae ∘ whitening``, with the whitening folded in.

    ``sae`` was trained on whitened inputs ``z = W (x − μ)`` (``W``: :attr:`PCAWhitening.matrix`, its
    inverse ``W⁺``: :attr:`PCAWhitening.inverse_matrix`, ``W W⁺ = I``): either the whitening was
    applied outside the SAE (pass it as ``whitening``) or it is the SAE's own ``sae.whitening``
    (leave ``whitening=None``). The folded SAE has no whitening; it takes raw ``x`` and returns
    reconstructions in raw space, with the same codes:

    - encoder: ``W_enc' = W_enc W``, ``b_enc' = b_enc``;
    - decoder: ``W_dec' = W_dec W⁺ᵀ``, ``b_dec' = μ + W⁺ b_dec`` (so ``x − b_dec'`` whitens to ``z − b_dec``).

    Only the plain linear encoder (:class:`~lit_repr.models.encoders.AmortizedEncoder`) can absorb
    the whitening. The folded atoms are not unit-norm, so the folded SAE has ``atom_norm="none"``
    (a free decoder); the original ``sae`` is left unchanged.

    Example:
        >>> from lit_repr.models import SparseAutoencoder
        >>> _ = torch.manual_seed(0)
        >>> x = torch.randn(64, 4) @ torch.randn(4, 4)
        >>> w = PCAWhitening.from_data(x, kind="zca", eps=1e-4)
        >>> sae = SparseAutoencoder(in_features=4, num_latents=8, decoder_bias_init="zeros")
        >>> folded = fold_whitening(sae, w)
        >>> bool(torch.allclose(folded(x), w.inverse(sae(w(x))), atol=1e-4))
        True
        >>> inside = SparseAutoencoder(in_features=4, num_latents=8, whitening=w)  # the SAE's own whitening
        >>> bool(torch.allclose(fold_whitening(inside)(x), inside(x), atol=1e-4))
        True
    """
    own = getattr(sae, "whitening", None)
    if whitening is None and own is None:
        raise ValueError("fold_whitening needs a whitening: pass whitening=..., or an SAE with sae.whitening set")
    if whitening is not None and own is not None and whitening is not own:
        raise ValueError("the SAE has its own whitening (sae.whitening) and another was passed as whitening=; "
                         "pass whitening=None to fold the SAE's own")
    whitening = whitening if whitening is not None else own
    from lit_repr.models.encoders import AmortizedEncoder

    whitening._check_fitted()
    if type(sae.encoder) is not AmortizedEncoder:
        raise ValueError(
            f"fold_whitening needs an SAE with the plain linear encoder (AmortizedEncoder), got "
            f"{type(sae.encoder).__name__}; fold into the input instead (apply the whitening before the SAE)"
        )
    if sae.in_features != whitening.out_features:
        raise ValueError(
            f"sae.in_features={sae.in_features} must equal whitening.out_features={whitening.out_features}"
        )
    hp = dict(sae.hparams)
    hp.update(in_features=whitening.in_features, atom_norm="none", image_shape=None, decoder_bias_init="zeros")
    if "variant" not in hp:
        hp["variant"] = copy.deepcopy(sae.variant)
    enc = sae.encoder
    folded = type(sae)(**hp, encoder=AmortizedEncoder(bias=enc.bias), whitening=None)
    folded.variant.load_state_dict(sae.variant.state_dict())
    folded = folded.to(device=sae.W_dec.device, dtype=sae.W_dec.dtype)
    f64 = torch.float64
    W = whitening.matrix.to(sae.W_dec.device)
    Winv = whitening.inverse_matrix.to(sae.W_dec.device)
    mu = whitening.mean.to(sae.W_dec.device)
    folded.encoder.linear.weight.copy_(enc.linear.weight.to(f64) @ W)
    if enc.bias:
        folded.encoder.linear.bias.copy_(enc.linear.bias)
    folded.W_dec.copy_(sae.W_dec.to(f64) @ Winv.T)
    folded.b_dec.copy_(mu + Winv @ sae.b_dec.to(f64))
    folded.bias_initialized.fill_(True)
    folded.samples_since_fired.copy_(sae.samples_since_fired)
    return folded
