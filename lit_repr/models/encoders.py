"""Sparse inference, decoupled from the dictionary: swappable encoders for sparse autoencoders.

(Longer than the project's ~450 lines per file: the five encoders share one base class, build
protocol and registry and are read side by side; the ISTA/FISTA solver alone is 150 lines.)

A sparse autoencoder reconstructs ``x ≈ b + s·W`` from a dictionary ``W`` (``(num_latents, in_features)``,
unit-norm rows called atoms) and a decoder bias ``b``. *How* the codes ``s`` are inferred is a
separate choice, made here:

- :class:`AmortizedEncoder`: one linear map and the SAE's nonlinearity (the classic SAE);
- :class:`MLPEncoder`: a deeper amortized encoder (one or more hidden layers);
- :class:`ISTAEncoder` / :class:`FISTAEncoder`: iterative shrinkage on the *current* dictionary
  for the non-negative lasso ``min_s ½‖x_c − s·W‖² + penalty·‖s‖₁`` (``x_c = x − b``), with a fixed
  or adaptive number of iterations and an optional warm start from an amortized encoder;
- :class:`InferenceTimeOptimization`: Adam on the codes against a trained SAE's dictionary.

Every encoder maps centered inputs ``x_c`` (``(B, in_features)``) and the dictionary to pre-activations
``(B, num_latents)``; the SAE's variant then applies its nonlinearity (ReLU, TopK, JumpReLU, ...),
which leaves the non-negative codes of the iterative solvers unchanged under ReLU. Iterative
encoders run without gradient (their codes are constants for the dictionary update, as in
classical dictionary learning); amortized encoders are trained by the SAE loss.

Each encoder reports :meth:`SparseEncoder.flops_per_sample` (multiply-adds count as two FLOPs),
so that code quality can be plotted against inference compute.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "SparseEncoder",
    "AmortizedEncoder",
    "MLPEncoder",
    "ISTAEncoder",
    "FISTAEncoder",
    "InferenceTimeOptimization",
    "ENCODERS",
    "build_encoder",
    "lasso_objective",
]


def lasso_objective(x: Tensor, codes: Tensor, dictionary: Tensor, penalty: float) -> Tensor:
    """Per-sample lasso objective ``½‖x − s·W‖² + penalty·‖s‖₁`` (``x`` already centered).

    Example:
        >>> W = torch.eye(2)
        >>> lasso_objective(torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 0.0]]), W, 0.5)
        tensor([0.5000])
    """
    r = x - codes @ dictionary
    return 0.5 * r.pow(2).sum(-1) + penalty * codes.abs().sum(-1)


class SparseEncoder(nn.Module):
    """Base class of encoders: ``forward(x_centered, dictionary) -> pre-activations``.

    Subclasses may be built lazily: the SAE calls :meth:`build` with its sizes, so YAML configs
    need not repeat ``in_features`` and ``num_latents``.

    Args:
        in_features: input dimension (``None``: set by :meth:`build`).
        num_latents: number of latents (``None``: set by :meth:`build`).

    Example:
        >>> enc = AmortizedEncoder(in_features=4, num_latents=8)
        >>> enc(torch.randn(3, 4), torch.randn(8, 4)).shape
        torch.Size([3, 8])
    """

    #: whether the encoder has parameters trained by the SAE loss
    amortized: bool = True
    #: ``forward`` is ``self.linear(x)``: the SAE may run its sparse TopK kernels on ``self.linear``
    #: (a subclass that redefines ``forward`` loses it unless it sets the attribute itself)
    supports_sparse_kernels: bool = False
    #: :meth:`scale_latents` can multiply each latent's pre-activation by a positive factor
    can_scale_latents: bool = False

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if "forward" in cls.__dict__ and "supports_sparse_kernels" not in cls.__dict__:
            cls.supports_sparse_kernels = False

    def __init__(self, in_features: int | None = None, num_latents: int | None = None) -> None:
        super().__init__()
        for name, v in (("in_features", in_features), ("num_latents", num_latents)):
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
                raise ValueError(f"{name} must be a positive int or None, got {v!r}")
        self.in_features = in_features
        self.num_latents = num_latents
        self._built = False
        if in_features is not None and num_latents is not None:
            self.build(in_features, num_latents)

    def build(self, in_features: int, num_latents: int, dictionary: Tensor | None = None) -> "SparseEncoder":
        """Create parameters for these sizes (idempotent); ``dictionary`` may seed the weights."""
        if self._built:
            if (in_features, num_latents) != (self.in_features, self.num_latents):
                raise ValueError(
                    f"{type(self).__name__} was built for in_features={self.in_features}, "
                    f"num_latents={self.num_latents}; cannot reuse it with in_features={in_features}, "
                    f"num_latents={num_latents}"
                )
            return self
        self.in_features, self.num_latents = in_features, num_latents
        self._build(in_features, num_latents, dictionary)
        self._built = True
        return self

    def _build(self, in_features: int, num_latents: int, dictionary: Tensor | None) -> None:
        pass

    def _check(self, x: Tensor, dictionary: Tensor) -> None:
        if not self._built:
            self.build(dictionary.shape[1], dictionary.shape[0])
        if x.ndim != 2 or x.shape[1] != self.in_features:
            raise ValueError(
                f"{type(self).__name__} expects inputs of shape (batch, {self.in_features}), got {tuple(x.shape)}"
            )
        if dictionary.shape != (self.num_latents, self.in_features):
            raise ValueError(
                f"dictionary must have shape ({self.num_latents}, {self.in_features}), got {tuple(dictionary.shape)}"
            )

    def forward(self, x: Tensor, dictionary: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def flops_per_sample(self) -> float:
        """Inference FLOPs per sample (a multiply-add counts two)."""
        raise NotImplementedError

    @torch.no_grad()
    def scale_latents(self, scale: Tensor) -> None:
        """Multiply the pre-activation of latent ``i`` by ``scale[i] > 0`` (``(num_latents,)``) by
        rescaling the last layer, where ``can_scale_latents``; the SAE uses it to fold atom norms
        into the encoder."""
        if not self.can_scale_latents:
            raise ValueError(f"{type(self).__name__} cannot rescale its latents (can_scale_latents is False)")
        layer = self._last_linear()
        layer.weight.mul_(scale.to(layer.weight)[:, None])
        if layer.bias is not None:
            layer.bias.mul_(scale.to(layer.bias))

    def _last_linear(self) -> nn.Linear:
        raise NotImplementedError


class AmortizedEncoder(SparseEncoder):
    """The amortized SAE encoder: ``pre = x_c @ W_encᵀ + b_enc`` (the nonlinearity is the SAE's).

    The weight is initialized to the transpose of the dictionary when the SAE builds it.

    Args:
        in_features: input dimension (``None``: set by the SAE).
        num_latents: number of latents (``None``: set by the SAE).
        bias: whether the encoder has a bias.

    Example:
        >>> enc = AmortizedEncoder(4, 8)
        >>> enc.flops_per_sample()
        72.0
    """

    supports_sparse_kernels = True
    can_scale_latents = True

    def __init__(self, in_features: int | None = None, num_latents: int | None = None, bias: bool = True) -> None:
        self.bias = bias
        super().__init__(in_features, num_latents)

    def _last_linear(self) -> nn.Linear:
        return self.linear

    def _build(self, in_features: int, num_latents: int, dictionary: Tensor | None) -> None:
        self.linear = nn.Linear(in_features, num_latents, bias=self.bias)
        if dictionary is not None:
            with torch.no_grad():
                self.linear.weight.copy_(dictionary)
                if self.bias:
                    self.linear.bias.zero_()

    def forward(self, x: Tensor, dictionary: Tensor) -> Tensor:
        self._check(x, dictionary)
        return self.linear(x)

    def flops_per_sample(self) -> float:
        return float(2 * self.in_features * self.num_latents + (self.num_latents if self.bias else 0))


class MLPEncoder(SparseEncoder):
    """A deeper amortized encoder: ``Linear → act → ... → Linear`` to pre-activations.

    Args:
        hidden: hidden widths (e.g. ``[256]``).
        activation: ``"relu"``, ``"gelu"`` or ``"tanh"``.
        in_features: input dimension (``None``: set by the SAE).
        num_latents: number of latents (``None``: set by the SAE).

    Example:
        >>> enc = MLPEncoder([16], in_features=4, num_latents=8)
        >>> enc(torch.randn(2, 4), torch.randn(8, 4)).shape, enc.flops_per_sample()
        (torch.Size([2, 8]), 424.0)
    """

    _ACTS = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh}
    can_scale_latents = True

    def __init__(
        self,
        hidden: Sequence[int] = (256,),
        activation: str = "relu",
        in_features: int | None = None,
        num_latents: int | None = None,
    ) -> None:
        hidden = [hidden] if isinstance(hidden, int) else list(hidden)
        if not hidden or any(not isinstance(h, int) or h < 1 for h in hidden):
            raise ValueError(f"hidden must be a non-empty list of positive ints, got {hidden!r}")
        if activation not in self._ACTS:
            raise ValueError(f"activation must be one of {sorted(self._ACTS)}, got {activation!r}")
        self.hidden = hidden
        self.activation = activation
        super().__init__(in_features, num_latents)

    def _build(self, in_features: int, num_latents: int, dictionary: Tensor | None) -> None:
        layers: list[nn.Module] = []
        widths = [in_features, *self.hidden]
        for a, b in zip(widths[:-1], widths[1:]):
            layers += [nn.Linear(a, b), self._ACTS[self.activation]()]
        layers.append(nn.Linear(widths[-1], num_latents))
        self.net = nn.Sequential(*layers)

    def _last_linear(self) -> nn.Linear:
        return self.net[-1]

    def forward(self, x: Tensor, dictionary: Tensor) -> Tensor:
        self._check(x, dictionary)
        return self.net(x)

    def flops_per_sample(self) -> float:
        widths = [self.in_features, *self.hidden, self.num_latents]
        matmul = sum(2 * a * b + b for a, b in zip(widths[:-1], widths[1:]))
        return float(matmul + sum(self.hidden))


def _lipschitz(dictionary: Tensor, iters: int = 50) -> Tensor:
    """Largest eigenvalue of ``W Wᵀ`` (= ``‖W‖₂²``), the Lipschitz constant of the lasso gradient."""
    n, d = dictionary.shape
    if min(n, d) <= 512:
        return torch.linalg.matrix_norm(dictionary.double(), ord=2).pow(2).to(dictionary.dtype)
    g = torch.Generator(device="cpu").manual_seed(0)
    v = torch.randn(d, generator=g).to(dictionary)
    for _ in range(iters):
        v = dictionary.T @ (dictionary @ v)
        v = v / v.norm().clamp_min(1e-30)
    return (dictionary @ v).pow(2).sum() * 1.01  # a little slack: power iteration underestimates


class ISTAEncoder(SparseEncoder):
    """Iterative shrinkage-thresholding (ISTA) on the current dictionary.

    Solves ``min_{s ≥ 0} ½‖x_c − s·W‖² + penalty·‖s‖₁`` per sample (``nonnegative=False`` drops
    the sign constraint), the objective of scikit-learn's ``SparseCoder(transform_alpha=penalty,
    positive_code=True)``. With ``tol > 0`` the number of iterations is adaptive: the batch stops
    when every sample's largest code change falls below ``tol`` (relative to its largest code),
    and :attr:`last_iterations` (used by :meth:`flops_per_sample`) is the mean over samples of
    the iteration at which each first converged, i.e. what a per-sample solver would spend.

    Args:
        penalty: L1 penalty ``>= 0``.
        max_iter: iterations (the fixed count when ``tol == 0``).
        tol: adaptive stopping tolerance (``0``: always ``max_iter`` iterations).
        warm_start: optional amortized encoder whose ReLU'd output initializes the codes.
        nonnegative: constrain codes to be ``>= 0``.
        in_features: input dimension (``None``: set by the SAE).
        num_latents: number of latents (``None``: set by the SAE).

    Example:
        >>> W = torch.eye(3)
        >>> ISTAEncoder(penalty=0.1, max_iter=10)(torch.tensor([[1.0, 0.05, -1.0]]), W)
        tensor([[0.9000, 0.0000, 0.0000]])
    """

    amortized = False
    momentum = False

    def __init__(
        self,
        penalty: float = 0.1,
        max_iter: int = 100,
        tol: float = 0.0,
        warm_start: SparseEncoder | None = None,
        nonnegative: bool = True,
        in_features: int | None = None,
        num_latents: int | None = None,
    ) -> None:
        if not (isinstance(penalty, (int, float)) and math.isfinite(penalty) and penalty >= 0):
            raise ValueError(f"penalty must be a finite number >= 0, got {penalty!r}")
        if not isinstance(max_iter, int) or isinstance(max_iter, bool) or max_iter < 1:
            raise ValueError(f"max_iter must be a positive int, got {max_iter!r}")
        if not (isinstance(tol, (int, float)) and tol >= 0):
            raise ValueError(f"tol must be a number >= 0, got {tol!r}")
        if warm_start is not None and not isinstance(warm_start, SparseEncoder):
            raise ValueError(f"warm_start must be a SparseEncoder or None, got {type(warm_start).__name__}")
        self.penalty = float(penalty)
        self.max_iter = max_iter
        self.tol = float(tol)
        self.nonnegative = nonnegative
        self.last_iterations: float = float(max_iter)
        super().__init__(in_features, num_latents)
        self.warm_start = warm_start

    def _build(self, in_features: int, num_latents: int, dictionary: Tensor | None) -> None:
        if self.warm_start is not None:
            self.warm_start.build(in_features, num_latents, dictionary)

    def _use_gram(self) -> bool:
        return self.num_latents <= 2 * self.in_features

    @staticmethod
    def _apply_gram(y: Tensor, W: Tensor, G: Tensor | None, use_gram: bool) -> Tensor:
        """``y @ W @ Wᵀ``: densely, or through the non-zeros of ``y`` when it is sparse enough that
        gathering ``nnz`` rows of the Gram matrix beats the dense product."""
        n, d = W.shape
        if G is not None and y.shape[0] > 0:
            nnz = int(torch.count_nonzero(y))
            if nnz * n < y.shape[0] * min(n * n, 2 * n * d) // 4:
                r, col = y.nonzero(as_tuple=True)
                counts = torch.bincount(r, minlength=y.shape[0])
                offsets = torch.zeros_like(counts)
                offsets[1:] = counts.cumsum(0)[:-1]
                return F.embedding_bag(col, G, offsets, per_sample_weights=y[r, col], mode="sum")
        return y @ G if use_gram else (y @ W) @ W.T

    def _shrink(self, z: Tensor, thr: Tensor) -> Tensor:
        if self.nonnegative:
            return (z - thr).clamp_min(0)
        return torch.sign(z) * (z.abs() - thr).clamp_min(0)

    @torch.no_grad()
    def forward(self, x: Tensor, dictionary: Tensor) -> Tensor:
        self._check(x, dictionary)
        W = dictionary.detach()
        x = x.detach()
        L = _lipschitz(W).clamp_min(1e-12)
        step = 1.0 / L
        thr = self.penalty * step
        use_gram = self._use_gram()
        # the Gram matrix also serves sparse iterates: (y @ G) row by row over y's non-zeros
        G = W @ W.T if use_gram or self.num_latents <= 8192 else None
        c = x @ W.T  # (B, n)
        if self.warm_start is not None:
            s = self.warm_start(x, W).clamp_min(0) if self.nonnegative else self.warm_start(x, W)
            s = s.detach().clone()
        else:
            s = torch.zeros_like(c)
        s = s.to(c.dtype)
        y = s
        t = torch.ones(x.shape[0], 1, dtype=c.dtype, device=c.device)  # momentum state per sample
        converged_at = torch.full((x.shape[0],), float(self.max_iter), device=x.device)
        out = s
        rows = torch.arange(x.shape[0], device=x.device)  # samples still iterating
        c = c * step  # the gradient step is y − step·(y G − c): keep step·c
        thr = float(thr)
        for it in range(1, self.max_iter + 1):
            z = torch.add(y, self._apply_gram(y, W, G, use_gram), alpha=-float(step)).add_(c)
            if self.nonnegative:
                s_new = z.clamp_min_(thr).sub_(thr)
            else:
                s_new = torch.sign(z).mul_(z.abs().sub_(thr).clamp_min_(0))
            diff = s_new - s
            if self.momentum:
                # adaptive restart (O'Donoghue & Candès, 2015): a sample whose momentum points
                # against its last step starts its momentum afresh
                restart = ((y - s_new) * diff).sum(1, keepdim=True) > 0
                t = torch.where(restart, torch.ones_like(t), t)
                t_new = 0.5 * (1.0 + torch.sqrt(1.0 + 4.0 * t * t))
                y = s_new + diff * ((t - 1.0) / t_new)
                t = t_new
            else:
                y = s_new
            s = s_new
            if self.tol > 0:
                change = diff.abs_().amax(1)
                scale = (s.amax(1) if self.nonnegative else s.abs().amax(1)).clamp_min_(1e-12)
                now = change <= self.tol * scale
                if bool(now.any()):
                    # converged samples leave the batch: the rest iterate on a smaller matrix
                    converged_at[rows[now]] = float(it)
                    out[rows[now]] = s[now]
                    keep = ~now
                    rows, s, y, c = rows[keep], s[keep], y[keep], c[keep]
                    if self.momentum:
                        t = t[keep]
                    if rows.numel() == 0:
                        break
        if self.tol > 0:
            if rows.numel():
                out[rows] = s
            s = out
        self.last_iterations = float(converged_at.mean()) if self.tol > 0 else float(self.max_iter)
        return s

    def flops_per_sample(self) -> float:
        n, d = self.num_latents, self.in_features
        per_iter = (2 * n * n if self._use_gram() else 4 * n * d) + 4 * n + (7 * n if self.momentum else 0)
        warm = self.warm_start.flops_per_sample() if self.warm_start is not None else 0.0
        return float(2 * n * d + self.last_iterations * per_iter + warm)


class FISTAEncoder(ISTAEncoder):
    """FISTA (Beck & Teboulle, 2009): ISTA with Nesterov momentum, ``O(1/t²)`` convergence.

    Each sample restarts its momentum when it points against the last step (the adaptive gradient
    restart of O'Donoghue & Candès, 2015), which on lasso problems cuts the iterations about 3x.

    Args:
        the arguments of :class:`ISTAEncoder` (same names, meanings and defaults).

    Example:
        >>> W = torch.eye(3)
        >>> FISTAEncoder(penalty=0.1, max_iter=50)(torch.tensor([[1.0, 0.05, -1.0]]), W)
        tensor([[0.9000, 0.0000, 0.0000]])
    """

    momentum = True


class InferenceTimeOptimization(SparseEncoder):
    """Inference-time optimization: Adam on the codes of each sample against a fixed dictionary.

    Minimises ``½‖x_c − s·W‖² + penalty·‖s‖₁`` over ``s ≥ 0`` by projected Adam, starting from
    ``init`` (typically the trained SAE's own amortized encoder) or from zero. Use it to ask how
    much better a *trained* SAE's dictionary explains data when codes are not amortized:
    ``sae.swap_encoder(InferenceTimeOptimization(init=sae.encoder))``.

    Args:
        penalty: L1 penalty ``>= 0``.
        steps: Adam steps.
        lr: Adam learning rate.
        init: optional encoder whose ReLU'd output initializes the codes.
        in_features: input dimension (``None``: set by the SAE).
        num_latents: number of latents (``None``: set by the SAE).

    Example:
        >>> W = torch.eye(2)
        >>> s = InferenceTimeOptimization(penalty=0.0, steps=200, lr=0.05)(torch.tensor([[1.0, 2.0]]), W)
        >>> bool(torch.allclose(s, torch.tensor([[1.0, 2.0]]), atol=1e-2))
        True
    """

    amortized = False

    def __init__(
        self,
        penalty: float = 0.1,
        steps: int = 100,
        lr: float = 0.05,
        init: SparseEncoder | None = None,
        in_features: int | None = None,
        num_latents: int | None = None,
    ) -> None:
        if not (isinstance(penalty, (int, float)) and math.isfinite(penalty) and penalty >= 0):
            raise ValueError(f"penalty must be a finite number >= 0, got {penalty!r}")
        if not isinstance(steps, int) or steps < 1:
            raise ValueError(f"steps must be a positive int, got {steps!r}")
        if not lr > 0:
            raise ValueError(f"lr must be > 0, got {lr!r}")
        self.penalty = float(penalty)
        self.steps = steps
        self.lr = float(lr)
        super().__init__(in_features, num_latents)
        self.init = init

    def _build(self, in_features: int, num_latents: int, dictionary: Tensor | None) -> None:
        if self.init is not None:
            self.init.build(in_features, num_latents, dictionary)

    def forward(self, x: Tensor, dictionary: Tensor) -> Tensor:
        self._check(x, dictionary)
        W = dictionary.detach()
        x = x.detach()
        with torch.no_grad():
            s0 = self.init(x, W).clamp_min(0) if self.init is not None else torch.zeros(x.shape[0], W.shape[0])
        with torch.enable_grad():
            s = s0.detach().clone().to(x).requires_grad_(True)
            opt = torch.optim.Adam([s], lr=self.lr)
            for _ in range(self.steps):
                opt.zero_grad(set_to_none=True)
                loss = lasso_objective(x, s, W, self.penalty).sum()
                loss.backward()
                opt.step()
                with torch.no_grad():
                    s.clamp_(min=0)
        return s.detach()

    def flops_per_sample(self) -> float:
        n, d = self.num_latents, self.in_features
        init = self.init.flops_per_sample() if self.init is not None else 0.0
        # forward s·W, backward rᵀ·W, objective and Adam's elementwise update (~12 per entry)
        return float(init + self.steps * (4 * n * d + 3 * d + 14 * n))


ENCODERS: dict[str, type[SparseEncoder]] = {
    "amortized": AmortizedEncoder,
    "linear": AmortizedEncoder,
    "mlp": MLPEncoder,
    "ista": ISTAEncoder,
    "fista": FISTAEncoder,
    "ito": InferenceTimeOptimization,
}


def build_encoder(encoder: SparseEncoder | str | None) -> SparseEncoder:
    """An encoder from an instance, a name in :data:`ENCODERS`, or ``None`` (amortized).

    Example:
        >>> type(build_encoder("fista")).__name__
        'FISTAEncoder'
    """
    if encoder is None:
        return AmortizedEncoder()
    if isinstance(encoder, SparseEncoder):
        return encoder
    if isinstance(encoder, str) and encoder in ENCODERS:
        return ENCODERS[encoder]()
    raise ValueError(f"encoder must be a SparseEncoder or one of {sorted(ENCODERS)}, got {encoder!r}")
