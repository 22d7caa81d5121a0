"""SAE variants: a nonlinearity plus the losses that go with it, in a registry keyed by name.

A variant declares

- its **arguments** through its constructor: :class:`~lit_repr.models.sae.SparseAutoencoder`
  builds ``SAE_VARIANTS[name](**variant_args, num_latents=...)``, so a variant registered with
  :func:`register_variant` receives any new argument from YAML (``variant: my_variant`` and
  ``variant_args: {my_arg: 3}``); unknown arguments raise a ``ValueError`` that lists the allowed ones;
- its **capabilities** through class attributes: ``supports_sparse_kernels`` (the codes are the
  per-sample top-``k`` of the ReLU'd pre-activations, so the SAE may run the sparse TopK kernels
  of :mod:`~lit_repr.models.sae.kernels`; a subclass that redefines :meth:`SAEVariant.activate`
  loses it unless it sets the attribute itself) and ``uses_dead_latents`` (the losses read
  :meth:`~lit_repr.models.sae.SparseAutoencoder.dead_latents`).

Built-in variants: ``"relu"`` (L1 penalty), ``"topk"`` (with the AuxK dead-latent loss),
``"batchtopk"`` (batch-level top ``k·B``, a threshold kept for inference) and ``"jumprelu"``
(learned thresholds trained by straight-through estimators, L0 penalty).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_repr.models.sae.kernels import auxk_loss, heaviside_step, jump_relu

if TYPE_CHECKING:  # pragma: no cover
    from lit_repr.models.sae.module import SparseAutoencoder

__all__ = [
    "SAEVariant",
    "ReLUVariant",
    "TopKVariant",
    "BatchTopKVariant",
    "JumpReLUVariant",
    "SAE_VARIANTS",
    "register_variant",
    "variant_arguments",
    "build_variant",
]

SAE_VARIANTS: dict[str, type["SAEVariant"]] = {}


def register_variant(name: str) -> Callable[[type["SAEVariant"]], type["SAEVariant"]]:
    """Class decorator registering an :class:`SAEVariant` under ``name`` (for YAML ``variant: name``).

    Example:
        >>> @register_variant("relu_copy")
        ... class ReLUCopy(ReLUVariant):
        ...     pass
        >>> SAE_VARIANTS["relu_copy"].__name__
        'ReLUCopy'
        >>> del SAE_VARIANTS["relu_copy"]
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"register_variant needs a non-empty name, got {name!r}")

    def deco(cls: type[SAEVariant]) -> type[SAEVariant]:
        if not (isinstance(cls, type) and issubclass(cls, SAEVariant)):
            raise ValueError(f"register_variant expects an SAEVariant subclass, got {cls!r}")
        SAE_VARIANTS[name] = cls
        cls.name = name
        return cls

    return deco


def _check(name: str, v: Any, kind: str) -> None:
    """Argument checks shared by the variants: ``kind`` is ``"positive_int"``, ``"nonneg"`` or ``"positive"``."""
    if kind == "positive_int":
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")
        return
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    if not ok or (v < 0 if kind == "nonneg" else v <= 0):
        raise ValueError(f"{name} must be a finite number {'>= 0' if kind == 'nonneg' else '> 0'}, got {v!r}")


class SAEVariant(nn.Module):
    """A nonlinearity plus the losses that go with it. Subclass and :func:`register_variant` to add one.

    Extension points: :meth:`activate` (pre-activations to codes, may return the top-k support
    ``(values, indices)`` for a sparse decoder), :meth:`losses` (named extra losses) and
    :meth:`_build` (size-dependent parameters, e.g. one threshold per latent). Constructor
    arguments are the variant's YAML arguments (``variant_args``); ``num_latents`` is set by the SAE.

    Args:
        num_latents: number of latents (``None``: set by the SAE through :meth:`build`).

    Example:
        >>> v = ReLUVariant(l1_coefficient=0.1, num_latents=4)
        >>> v.activate(torch.tensor([[1.0, -1.0, 0.5, 0.0]]))[0]
        tensor([[1.0000, 0.0000, 0.5000, 0.0000]])
    """

    name = "base"
    #: the codes are the per-sample top-``k`` of ReLU'd pre-activations (attribute ``k``): the SAE
    #: may use its sparse TopK kernels
    supports_sparse_kernels: bool = False
    #: the losses read the SAE's dead-latent mask
    uses_dead_latents: bool = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "activate" in cls.__dict__ and "supports_sparse_kernels" not in cls.__dict__:
            cls.supports_sparse_kernels = False  # a new nonlinearity: the TopK kernels no longer compute it

    def __init__(self, num_latents: int | None = None) -> None:
        super().__init__()
        self.num_latents: int | None = None
        if num_latents is not None:
            self.build(num_latents)

    def build(self, num_latents: int) -> "SAEVariant":
        """Fix the number of latents and create size-dependent state (idempotent)."""
        _check("num_latents", num_latents, "positive_int")
        if self.num_latents is not None:
            if num_latents != self.num_latents:
                raise ValueError(
                    f"{type(self).__name__} was built for num_latents={self.num_latents}, "
                    f"cannot reuse it with num_latents={num_latents}"
                )
            return self
        self._build(num_latents)
        self.num_latents = num_latents
        return self

    def _build(self, num_latents: int) -> None:
        pass

    def activate(self, pre: Tensor) -> tuple[Tensor, tuple[Tensor, Tensor] | None]:
        raise NotImplementedError

    def losses(self, sae: "SparseAutoencoder", pre: Tensor, codes: Tensor, residual: Tensor) -> dict[str, Tensor]:
        return {}

    def scale_latents(self, scale: Tensor) -> None:
        """The encoder's pre-activations were multiplied by ``scale`` (``(num_latents,)``, positive):
        rescale any per-latent state measured in their units (e.g. thresholds). Default: nothing."""


def variant_arguments(cls: type[SAEVariant]) -> list[str] | None:
    """The YAML arguments a variant class takes (``None``: it takes any keyword).

    Example:
        >>> variant_arguments(TopKVariant)
        ['k', 'aux_k', 'aux_coefficient']
    """
    params = inspect.signature(cls.__init__).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    keyword = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return [p.name for p in params if p.kind in keyword and p.name not in ("self", "num_latents")]


def build_variant(
    variant: str | SAEVariant, num_latents: int, variant_args: Mapping[str, Any] | None = None
) -> SAEVariant:
    """A built variant from a registered name and its arguments, or from an instance.

    Example:
        >>> build_variant("topk", 16, {"k": 4}).k
        4
        >>> build_variant("topk", 16, {"kk": 4})
        Traceback (most recent call last):
        ...
        ValueError: variant 'topk' (TopKVariant) has no argument 'kk'; its arguments are [...]
    """
    if isinstance(variant, SAEVariant):
        if variant_args:
            raise ValueError(
                f"variant_args={dict(variant_args)!r} apply to a variant given by name; the {type(variant).__name__} "
                f"instance carries its own arguments (pass variant_args=None)"
            )
        return variant.build(num_latents)
    if not isinstance(variant, str) or variant not in SAE_VARIANTS:
        raise ValueError(f"variant must be an SAEVariant or one of {sorted(SAE_VARIANTS)}, got {variant!r}")
    if variant_args is not None and not isinstance(variant_args, Mapping):
        raise ValueError(f"variant_args must be a mapping of argument names to values, got {variant_args!r}")
    cls = SAE_VARIANTS[variant]
    args = dict(variant_args or {})
    allowed = variant_arguments(cls)
    bad = [a for a in args if a == "num_latents" or (allowed is not None and a not in allowed)]
    if bad:
        names = ", ".join(repr(a) for a in bad)
        why = " (num_latents is the SAE's)" if "num_latents" in bad else ""
        raise ValueError(
            f"variant {variant!r} ({cls.__name__}) has no argument {names}{why}; its arguments are {allowed}"
        )
    return cls(**args, num_latents=num_latents)


@register_variant("relu")
class ReLUVariant(SAEVariant):
    """ReLU codes with an L1 penalty ``l1_coefficient·Σ_i s_i‖W_i‖``.

    Args:
        l1_coefficient: L1 penalty weight (``>= 0``).
        num_latents: number of latents (``None``: set by the SAE).

    Example:
        >>> ReLUVariant(l1_coefficient=1.0).activate(torch.tensor([[-1.0, 2.0, 0.0]]))[0]
        tensor([[0., 2., 0.]])
    """

    def __init__(self, l1_coefficient: float = 1e-3, num_latents: int | None = None) -> None:
        _check("l1_coefficient", l1_coefficient, "nonneg")
        self.l1_coefficient = float(l1_coefficient)
        super().__init__(num_latents)

    def activate(self, pre: Tensor) -> tuple[Tensor, None]:
        return F.relu(pre), None

    def losses(self, sae: "SparseAutoencoder", pre: Tensor, codes: Tensor, residual: Tensor) -> dict[str, Tensor]:
        norms = sae.W_dec.norm(dim=1)
        return {"l1": self.l1_coefficient * (codes * norms).sum(-1).mean()}


@register_variant("topk")
class TopKVariant(SAEVariant):
    """TopK (Gao et al., 2024): keep the ``k`` largest pre-activations (ReLU'd) per sample, AuxK loss.

    Args:
        k: active latents per sample (``1 <= k <= num_latents``).
        aux_k: dead latents used by the AuxK loss (default ``2·k``, capped at ``num_latents``).
        aux_coefficient: weight of the AuxK loss (Gao et al. use 1/32).
        num_latents: number of latents (``None``: set by the SAE).

    Example:
        >>> codes, (vals, idx) = TopKVariant(k=2, num_latents=4).activate(torch.tensor([[0.1, 3.0, -1.0, 2.0]]))
        >>> codes
        tensor([[0., 3., 0., 2.]])
    """

    supports_sparse_kernels = True
    uses_dead_latents = True

    def __init__(
        self, k: int = 32, aux_k: int | None = None, aux_coefficient: float = 1 / 32, num_latents: int | None = None
    ) -> None:
        _check("k", k, "positive_int")
        if aux_k is not None:
            _check("aux_k", aux_k, "positive_int")
        _check("aux_coefficient", aux_coefficient, "nonneg")
        self.k = k
        self.aux_k = aux_k if aux_k is not None else 2 * k
        self.aux_coefficient = float(aux_coefficient)
        super().__init__(num_latents)

    def _build(self, num_latents: int) -> None:
        if self.k > num_latents:
            raise ValueError(
                f"k must be <= num_latents={num_latents} (a TopK code cannot have more active latents), got {self.k}"
            )
        self.aux_k = min(self.aux_k, num_latents)

    def activate(self, pre: Tensor) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        vals, idx = pre.topk(self.k, dim=-1)
        vals = F.relu(vals)
        codes = torch.zeros_like(pre).scatter_(-1, idx, vals)
        return codes, (vals, idx)

    def losses(self, sae: "SparseAutoencoder", pre: Tensor, codes: Tensor, residual: Tensor) -> dict[str, Tensor]:
        if self.aux_coefficient == 0 or not self.training:
            return {}
        dead = sae.dead_latents()
        return {"auxk": self.aux_coefficient * auxk_loss(residual.detach(), pre, dead, sae.W_dec, self.aux_k)}


@register_variant("batchtopk")
class BatchTopKVariant(TopKVariant):
    """BatchTopK (Bussmann et al., 2024): the top ``k·B`` activations of the whole batch in training;
    at inference a fixed threshold, the running mean of the smallest kept activation.

    Args:
        k: mean active latents per sample.
        aux_k: dead latents used by the AuxK loss (default ``2·k``).
        aux_coefficient: weight of the AuxK loss.
        threshold_momentum: EMA momentum of the inference threshold, in ``(0, 1]``.
        num_latents: number of latents (``None``: set by the SAE).

    Example:
        >>> v = BatchTopKVariant(k=1, num_latents=3)
        >>> v.activate(torch.tensor([[3.0, 2.0, 0.0], [1.0, 0.0, 0.5]]))[0]
        tensor([[3., 2., 0.],
                [0., 0., 0.]])
    """

    supports_sparse_kernels = False  # the support is chosen over the batch, not per sample

    def __init__(
        self,
        k: int = 32,
        aux_k: int | None = None,
        aux_coefficient: float = 1 / 32,
        threshold_momentum: float = 0.01,
        num_latents: int | None = None,
    ) -> None:
        if not (isinstance(threshold_momentum, (int, float)) and 0 < threshold_momentum <= 1):
            raise ValueError(f"threshold_momentum must be in (0, 1], got {threshold_momentum!r}")
        self.threshold_momentum = float(threshold_momentum)
        super().__init__(k, aux_k, aux_coefficient, num_latents)
        self.register_buffer("threshold", torch.tensor(-1.0))  # < 0: not estimated yet

    def activate(self, pre: Tensor) -> tuple[Tensor, None]:
        if not self.training:
            if float(self.threshold) < 0:
                return TopKVariant.activate(self, pre)[0], None
            return torch.where(pre > self.threshold, pre, torch.zeros_like(pre)), None
        flat = F.relu(pre).flatten()
        vals, idx = flat.topk(min(self.k * pre.shape[0], flat.numel()))
        codes = torch.zeros_like(flat).scatter(0, idx, vals).view_as(pre)
        with torch.no_grad():
            pos = vals[vals > 0]
            if pos.numel():
                m = pos.min()
                if float(self.threshold) < 0:
                    self.threshold.copy_(m)
                else:
                    self.threshold.lerp_(m, self.threshold_momentum)
        return codes, None


@register_variant("jumprelu")
class JumpReLUVariant(SAEVariant):
    """JumpReLU (Rajamanoharan et al., 2024): ``s = pre·H(pre − θ)`` with learned ``θ = exp(log θ)``,
    trained through straight-through estimators (rectangle kernel of width ``bandwidth``), and an
    L0 penalty ``l0_coefficient·Σ_i H(pre_i − θ_i)``.

    Args:
        threshold_init: initial threshold (``> 0``).
        bandwidth: kernel width of the straight-through estimators (``> 0``).
        l0_coefficient: L0 penalty weight (``>= 0``).
        num_latents: number of latents (``None``: set by the SAE).

    Example:
        >>> JumpReLUVariant(threshold_init=0.5, num_latents=3).activate(torch.tensor([[0.4, 0.6, -1.0]]))[0]
        tensor([[0.0000, 0.6000, 0.0000]], grad_fn=<_JumpReLUBackward>)
    """

    def __init__(
        self,
        threshold_init: float = 0.001,
        bandwidth: float = 0.001,
        l0_coefficient: float = 1e-3,
        num_latents: int | None = None,
    ) -> None:
        _check("threshold_init", threshold_init, "positive")
        _check("bandwidth", bandwidth, "positive")
        _check("l0_coefficient", l0_coefficient, "nonneg")
        self.threshold_init = float(threshold_init)
        self.bandwidth = float(bandwidth)
        self.l0_coefficient = float(l0_coefficient)
        super().__init__(num_latents)

    def _build(self, num_latents: int) -> None:
        self.log_threshold = nn.Parameter(torch.full((num_latents,), math.log(self.threshold_init)))

    @property
    def threshold(self) -> Tensor:
        return self.log_threshold.exp()

    @torch.no_grad()
    def scale_latents(self, scale: Tensor) -> None:
        self.log_threshold.add_(scale.to(self.log_threshold).log())

    def activate(self, pre: Tensor) -> tuple[Tensor, None]:
        return jump_relu(pre, self.threshold, self.bandwidth), None

    def losses(self, sae: "SparseAutoencoder", pre: Tensor, codes: Tensor, residual: Tensor) -> dict[str, Tensor]:
        return {"l0": self.l0_coefficient * heaviside_step(pre, self.threshold, self.bandwidth).sum(-1).mean()}
