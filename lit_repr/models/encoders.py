"""Sparse inference, decoupled from the dictionary: swappable encoders for sparse autoencoders.

(Longer than the project's ~450 lines per file: the five encoders share one base class, build
protocol and registry and are read side by side; the ISTA/FISTA solvers, full-problem, active-set
and working-set, with their batched support solves, are about 700 lines.)

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
from concurrent.futures import ThreadPoolExecutor

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from lit_repr.threads import num_threads as _threads

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


def _max_abs(a: Tensor) -> Tensor:
    """``|a|.amax(1)`` from one min/max pass, without the temporary ``|a|``."""
    lo, hi = torch.aminmax(a, dim=1)
    return torch.maximum(hi, lo.neg_())


def _set_lipschitz(G: Tensor, L: float) -> Tensor:
    """``(b, 1)`` upper bounds of the largest eigenvalues of the ``(b, k, k)`` Gram matrices ``G`` of
    working sets: exact for small sets, else the smaller of Gershgorin's bound and the whole
    dictionary's ``L`` (a set's Gram matrix is a principal submatrix of the dictionary's)."""
    if G.shape[1] <= 16:
        return torch.linalg.eigvalsh(G)[:, -1:].clamp_min(1e-12)
    return G.abs().sum(2).amax(1, keepdim=True).clamp_max_(L).clamp_min_(1e-12)


def _gather_square(M: Tensor, idx: Tensor, stride: int | None = None) -> Tensor:
    """``M[idx[i, p], idx[i, q] % stride]`` as a ``(b, k, k)`` tensor (``idx`` ``(b, k)``): each row's
    square submatrix of ``M`` (``(m, stride)``; ``stride`` defaults to its number of columns), from
    one gather of the flattened matrix."""
    b, k = idx.shape
    cols = idx if stride is None else idx.remainder(stride)
    flat = idx.unsqueeze(2) * M.shape[1] + cols.unsqueeze(1)
    return M.reshape(-1).index_select(0, flat.view(-1)).view(b, k, k)


def _gradient(c: Tensor, gram_rows: Tensor, ids: Tensor, sol: Tensor, n: int) -> Tensor:
    """``c − s·G`` for codes ``sol`` on atoms ``ids`` (``(b, m)``; rows of ``gram_rows``), with one more
    column (uninitialised) that padding positions may be scattered into."""
    g = torch.empty(c.shape[0], n + 1, dtype=c.dtype, device=c.device)
    if ids.shape[1]:
        torch.sub(c, F.embedding_bag(ids, gram_rows, per_sample_weights=sol, mode="sum"), out=g[:, :n])
    else:
        g[:, :n] = c
    return g


def _select(mask: Tensor, *tensors: Tensor) -> tuple[Tensor, ...]:
    """The rows of each tensor where ``mask`` (``(b,)``) holds, from one ``nonzero``."""
    at = mask.nonzero().squeeze(1)
    return tuple(t.index_select(0, at) for t in tensors)


def _solve_supports(G: Tensor, rhs: Tensor, active: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Solve ``G_AA·s_A = rhs_A`` for each sample's support ``A`` (``active``, ``(b, k)``; ``s = 0`` outside).

    ``G`` is ``(b, k, k)`` symmetric positive semi-definite. Samples are grouped by support size and
    each group's supports are moved to the front, so that the batched Cholesky factorisations are
    only as large as the supports. Returns the solutions ``(b, k)``, a ``(b,)`` mask of the
    well-posed systems and, for the others, the atom that makes the support dependent (``(b,)``,
    ``-1`` where none): a factorisation fails there, or its pivot keeps less than ``1e-9`` of the
    atom's squared norm (a duplicate or nearly dependent atom). Ill-posed systems get zero solutions.
    """
    b, k = rhs.shape
    sol = torch.zeros_like(rhs)
    ok = torch.ones(b, dtype=torch.bool, device=rhs.device)
    dependent = torch.full((b,), -1, dtype=torch.long, device=rhs.device)
    size = active.sum(1)
    order = torch.argsort((~active).to(torch.uint8), dim=1, stable=True)  # each support first
    # size classes: one batched factorisation per class, each padded to its largest support (a class
    # splits where the padding would cost more than a factorisation call)
    bounds = [int(size.max())]
    while bounds[-1] > 16:
        bounds.append(bounds[-1] // 2)
    for lo, hi in zip([*bounds[1:], 0], bounds):
        if hi == 0:
            break
        group = ((size > lo) & (size <= hi)).nonzero().squeeze(1)
        if group.numel():
            p = order[group, :hi]
            on = torch.arange(hi, device=rhs.device) < size[group].unsqueeze(1)  # the support comes first
            M = _gather_square(G.view(-1, k), p + (group * k).unsqueeze(1), k)
            M.masked_fill_(~(on.unsqueeze(2) & on.unsqueeze(1)), 0.0).diagonal(dim1=1, dim2=2).masked_fill_(~on, 1.0)
            chol, info = torch.linalg.cholesky_ex(M)
            # a failed factorisation, or a pivot that keeps less than 1e-9 of its atom's squared norm,
            # marks a dependent atom
            small = ~(chol.diagonal(dim1=1, dim2=2).square() >= 1e-9 * M.diagonal(dim1=1, dim2=2))
            good = (info == 0) & ~small.any(1)
            if not bool(good.all()):
                # the pivots before a failed one are valid; the first small one marks a dependent atom
                failed_at = torch.where(info > 0, info - 1, hi)
                small &= torch.arange(hi, device=M.device) < failed_at.unsqueeze(1)
                good = (info == 0) & ~small.any(1)
                first = torch.where(small.any(1), small.to(torch.uint8).argmax(1), failed_at.clamp_max(hi - 1))
                dependent[group] = torch.where(good, -1, p.gather(1, first.unsqueeze(1)).squeeze(1))
                chol = torch.where(good[:, None, None], chol, torch.eye(hi, dtype=M.dtype, device=M.device))
                on &= good[:, None]
            # zero right-hand sides outside the support give zero solutions there (the identity's rows)
            x = torch.cholesky_solve(rhs[group].gather(1, p).masked_fill_(~on, 0.0).unsqueeze(2), chol).squeeze(2)
            sol[group] = x.new_zeros(x.shape[0], k).scatter_(1, p, x)
            ok[group] = good
    return sol, ok, dependent


class ISTAEncoder(SparseEncoder):
    """Iterative shrinkage-thresholding (ISTA) on the current dictionary.

    Solves ``min_{s ≥ 0} ½‖x_c − s·W‖² + penalty·‖s‖₁`` per sample (``nonnegative=False`` drops
    the sign constraint), the objective of scikit-learn's ``SparseCoder(transform_alpha=penalty,
    positive_code=True)``. With ``tol == 0`` every sample runs ``max_iter`` iterations on the full
    problem. With ``tol > 0`` and no warm start, each sample first takes a few primal-dual active-set
    steps on the whole dictionary (its support and signs give its exact codes by one small linear solve;
    the atoms whose sign flipped leave, the atoms whose gradient most exceeds the penalty join), and is
    done where the lasso's optimality conditions hold on every atom; this finishes most samples of
    sparse problems. The others (and, with a warm start, every sample) are solved to convergence on a
    *working set* of atoms: a guessed support and signs (those of the gradient at the start, then those
    of the last solution with the atoms that joined) give the set's exact solution by a small linear
    solve, corrected by a few active-set steps and kept where the optimality conditions hold. Where no
    guess holds, the sample iterates on the few atoms of the set (with the step of the set's own
    Lipschitz bound) until its largest code change falls below a loose tolerance relative to its largest
    code, and the support and signs of the iterate give the next guess (else it iterates on, down to
    ``tol``). The full gradient then checks the lasso's optimality conditions on every other atom, and
    the atoms that violate them (by more than ``sqrt(tol)·penalty``) join the set, until none does.
    Samples whose set would exceed a quarter of the atoms finish on the full problem.
    :attr:`last_iterations` is the mean over samples of the iterations each ran (an active-set step or a
    round of exact solves counts as one), and :meth:`flops_per_sample` counts the FLOPs the solve spent.

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
        self._last_flops: float | None = None
        super().__init__(in_features, num_latents)
        self.warm_start = warm_start

    def _build(self, in_features: int, num_latents: int, dictionary: Tensor | None) -> None:
        if self.warm_start is not None:
            self.warm_start.build(in_features, num_latents, dictionary)

    #: ``x·Wᵀ`` of fewer multiply-adds (batch × atoms × features) runs on one thread
    _SMALL_PRODUCT = 1 << 24

    def _use_gram(self) -> bool:
        return self.num_latents <= 2 * self.in_features

    @torch.no_grad()
    def forward(self, x: Tensor, dictionary: Tensor) -> Tensor:
        self._check(x, dictionary)
        W = dictionary.detach()
        x = x.detach()
        # a small product runs on one thread: more threads only wait on each other, much longer when
        # the cores are shared
        small = 1 if x.shape[0] * W.shape[0] * W.shape[1] < self._SMALL_PRODUCT else None
        with _threads(1):
            L = float(_lipschitz(W).clamp_min(1e-12))
        with _threads(small):
            c = x @ W.T
        W = W.to(c.dtype)
        if self.warm_start is not None:
            s0 = self.warm_start(x, W).detach()
            s0 = (s0.clamp_min(0) if self.nonnegative else s0).to(c.dtype)
        else:
            s0 = None
        if self.tol > 0:
            # the working sets' many small operations run on one thread (threads would mostly wait
            # on each other, and much longer when the cores are shared); the gradient products do not
            threads = torch.get_num_threads()
            with _threads(1):
                codes, iters, flops = self._solve_working_set(x.to(c.dtype), W, c, s0, L, threads)
            self.last_iterations = float(iters.mean())
            self._last_flops = float(flops.mean())
            return codes
        out = torch.empty_like(c)
        converged_at = torch.full((x.shape[0],), float(self.max_iter), device=c.device)
        if s0 is None:
            s0 = torch.zeros_like(c)
        self._solve(s0, c.mul_(1.0 / L), self._full_ops(W, c.dtype, 1.0 / L), self.penalty / L, out, converged_at,
                    self.max_iter)  # fmt: skip
        self.last_iterations = float(self.max_iter)
        self._last_flops = None
        return out

    def _full_ops(self, W: Tensor, dtype: torch.dtype, step: float) -> tuple[Tensor, ...]:
        """One iteration is ``z = y·M + step·x·Wᵀ`` with ``M = I − step·W·Wᵀ`` (n² per sample), or
        ``z = y + (y·W)·(−step·Wᵀ) + step·x·Wᵀ`` (2·n·d per sample): whichever is cheaper."""
        W = W.to(dtype)
        if self._use_gram():
            return (torch.eye(W.shape[0], dtype=dtype, device=W.device).sub_(W @ W.T, alpha=step),)
        return (W, W.T.mul(-step))

    def _dense_iteration_flops(self) -> float:
        n, d = self.num_latents, self.in_features
        return (2 * n * n if self._use_gram() else 4 * n * d) + 4 * n + (7 * n if self.momentum else 0)

    #: entries of a block of iterates (``block rows × num_latents``): the buffers of a block stay in cache
    _BLOCK_ELEMENTS = 32768

    def _solve(
        self,
        s: Tensor,
        c: Tensor,
        ops: tuple[Tensor, ...],
        thr: float,
        out: Tensor,
        converged_at: Tensor,
        max_iter: int,
    ) -> None:
        """Full-problem (F)ISTA from codes ``s`` with ``c = step·x·Wᵀ``, block by block of rows."""
        block = max(1, self._BLOCK_ELEMENTS // max(1, c.shape[1]))
        for start in range(0, c.shape[0], block):
            rows = slice(start, start + block)
            self._solve_block(s[rows], c[rows], ops, thr, out[rows], converged_at[rows], max_iter)

    def _solve_block(
        self,
        s: Tensor,
        c: Tensor,
        ops: tuple[Tensor, ...],
        thr: float,
        out: Tensor,
        converged_at: Tensor,
        max_iter: int,
    ) -> None:
        """Iterate the rows of ``s`` (initial codes) to convergence; write codes into ``out`` and the
        iteration at which each row converged into ``converged_at`` (both views of the results)."""
        s = s.clone()
        y = s.clone() if self.momentum else s
        z, diff, tmp = torch.empty_like(s), torch.empty_like(s), torch.empty_like(s)
        h = torch.empty(s.shape[0], ops[0].shape[1], dtype=s.dtype, device=s.device) if len(ops) == 2 else None
        t = torch.ones(s.shape[0], 1, dtype=s.dtype, device=s.device)  # momentum state per sample
        rows = torch.arange(s.shape[0], device=s.device)  # samples still iterating
        done = torch.zeros(s.shape[0], dtype=torch.bool, device=s.device)  # converged, not yet removed
        n_done = 0
        for it in range(1, max_iter + 1):
            if h is None:
                torch.addmm(c, y, ops[0], out=z)
            else:
                torch.mm(y, ops[0], out=h)
                torch.addmm(c, h, ops[1], out=z).add_(y)
            if self.nonnegative:  # z ← max(z − thr, 0)
                z.sub_(thr).clamp_min_(0)
            else:  # z ← sign(z)·max(|z| − thr, 0) = z − clamp(z, −thr, thr)
                z.sub_(torch.clamp(z, -thr, thr, out=tmp))
            torch.sub(z, s, out=diff)
            if self.momentum:
                # adaptive restart (O'Donoghue & Candès, 2015): a sample whose momentum points
                # against its last step starts its momentum afresh
                y.sub_(z)
                restart = torch.bmm(y.unsqueeze(1), diff.unsqueeze(2)).view(-1, 1) > 0
                t.masked_fill_(restart, 1.0)
                t_new = t.mul(t).mul_(4.0).add_(1.0).sqrt_().add_(1.0).mul_(0.5)
                torch.addcmul(z, diff, t.sub_(1.0).div_(t_new), out=y)
                t = t_new
                s, z = z, s
            else:
                s, z = z, s
                y = s
            if self.tol > 0:
                change = _max_abs(diff)
                scale = _max_abs(s).clamp_min_(1e-12)
                new = (change <= scale.mul_(self.tol)).logical_and_(~done)
                if bool(new.any()):
                    out[rows[new]] = s[new]
                    converged_at[rows[new]] = float(it)
                    done |= new
                    n_done += int(new.sum())
                    if n_done == rows.numel():
                        return
                    if n_done * 8 >= rows.numel():  # converged samples leave the block
                        keep = ~done
                        rows, s, y, c, t = rows[keep], s[keep], y[keep] if self.momentum else None, c[keep], t[keep]
                        if not self.momentum:
                            y = s
                        done = done[keep]
                        n_done = 0
                        z, diff, tmp = torch.empty_like(s), torch.empty_like(s), torch.empty_like(s)
                        if h is not None:
                            h = h[: s.shape[0]]
        keep = ~done
        out[rows[keep]] = s[keep]

    #: rows of a block of the working-set solver (at most; blocks are shared among threads)
    _WS_BLOCK_ROWS = 2048
    #: rows of a block of the working-set solver (at least)
    _WS_MIN_BLOCK_ROWS = 256
    #: first working-set size; it grows by the atoms that violate optimality outside it
    _WS_START = 4
    #: dictionaries of at most this many atoms keep their Gram matrix for the working sets
    _WS_GRAM_ATOMS = 2048
    #: most atoms that join a sample's working set at a time
    _WS_GROW = 4
    #: tolerance of the solves on sets that are still growing
    _WS_LOOSE_TOL = 3e-2
    #: factor on a sample's tolerance each time its iterates do not give the exact solution on its set
    _WS_TIGHTEN = 0.01

    def _solve_working_set(
        self, x: Tensor, W: Tensor, c: Tensor, s0: Tensor | None, L: float, threads: int
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Working-set (active-set) solve to convergence, exact by the optimality conditions.

        Without a warm start (``s0`` is ``None``) and where the dictionary's Gram matrix is kept, each
        block of samples first takes up to ``_AS_STEPS`` active-set steps on the whole dictionary
        (:meth:`_active_set`); the samples they leave go on as follows. Each sample works on a small set
        of atoms (the non-zeros of its start and the atoms whose gradient most exceeds the penalty). The
        support and signs of its start, with the atoms of the set whose gradient exceeds the penalty,
        give a first guess of the set's exact minimiser by one small linear solve
        (:meth:`_solve_support`, with a few active-set corrections), accepted only where the set's
        optimality conditions hold; where it fails, the sample iterates on its set, with the step of the
        set's own Lipschitz bound, to a loose tolerance, and the support and signs of the iterate give
        the next guess. The full gradient ``(x − s·W)·Wᵀ`` is then checked on every atom outside the
        set: a sample is done when none exceeds the penalty by more than ``sqrt(tol)·penalty`` (the
        lasso's optimality conditions), otherwise up to ``_WS_GROW`` violators join its set and the next
        exact solve starts from its last solution and their gradient signs, with no iteration. A sample
        whose set has no exact solution yet iterates on at a tighter tolerance, down to ``tol``, where
        it is done as before. Samples whose set would exceed a quarter of the atoms finish on the full
        problem.

        Returns codes ``(B, n)``, iterations per sample (an active-set step or a round of exact
        solves counts as one) and FLOPs per sample.
        """
        B, n = c.shape
        d = W.shape[1]
        lam = self.penalty
        eps = lam * math.sqrt(self.tol)
        codes = torch.zeros_like(c)
        iters = torch.zeros(B, dtype=c.dtype, device=c.device)
        flops = torch.full((B,), 2.0 * n * d, dtype=c.dtype, device=c.device)
        if B == 0:
            return codes, iters, flops
        k_max = max(self._WS_START, n // 4)
        # the dictionary's Gram matrix, from which each set's is read, unless it would be large
        gram = W @ W.T if n <= self._WS_GRAM_ATOMS else None
        flops += 2.0 * n * n * d / B if gram is not None else 0.0
        loose = max(self.tol, self._WS_LOOSE_TOL)
        bordered = None
        if gram is not None and self._AS_STEPS > 0:
            # the Gram matrix in float64, bordered by the identity of one padding atom per support
            # position (a support of more than ``d`` atoms is dependent: the steps leave it)
            as_max = min(k_max, d)
            ext = torch.zeros(n + as_max, n + as_max, dtype=torch.float64, device=c.device)
            ext[:n, :n] = gram
            ext[n:, n:].diagonal().fill_(1.0)
            rows_of_gram = ext[:, :n].contiguous()
            bordered = (ext, rows_of_gram, rows_of_gram.float())
        # blocks of rows are independent: with several threads, one worker per thread solves its own
        # blocks, each on one intra-op thread (the many small operations keep the cores busy, where
        # threads sharing each operation would mostly wait on each other, and much longer when the
        # cores are shared); a single block's products are too small to share either
        size = max(self._WS_MIN_BLOCK_ROWS, min(self._WS_BLOCK_ROWS, -(-B // threads)))
        starts = range(0, B, size)
        workers = min(threads, len(starts))

        def block(start: int) -> None:
            rows = torch.arange(start, min(B, start + size), device=c.device)
            sb = None if s0 is None else s0[rows]
            if sb is None and bordered is not None:
                # active-set steps on the whole dictionary; the samples they leave go on with working sets
                steps = min(self._AS_STEPS, self.max_iter)
                cb = c[start : start + rows.numel()]
                sA, done, used, spent = self._active_set(cb.to(torch.float64), *bordered, eps, as_max, steps)
                codes[rows] = sA.to(c.dtype)
                iters[rows] += used.to(c.dtype)
                flops[rows] += spent.to(c.dtype)
                rows = rows[~done]
                if not rows.numel():
                    return
            if sb is None or not bool(sb.any()):  # from zero codes the gradient is ``x·Wᵀ`` itself
                k = min(n, self._WS_START)
                cb = c[rows]
                idx = (cb if self.nonnegative else cb.abs()).topk(k, dim=1).indices
                sS = c.new_zeros(rows.numel(), k)
            else:
                full = self._violation((x[rows] - sb @ W) @ W.T)
                full[sb != 0] = math.inf  # a warm start's non-zeros are in the set
                k = min(n, max(self._WS_START, int((sb != 0).sum(1).max())))
                idx = full.topk(k, dim=1).indices
                sS = sb.gather(1, idx)
                flops[rows] += 4.0 * n * d
            # each sample's tolerance: loose while its set grows, tightened (down to ``tol``) while
            # its iterates do not yet give the support and signs of the set's exact solution
            tol = torch.full((rows.numel(),), loose, dtype=c.dtype, device=c.device)
            fresh = torch.ones(rows.numel(), dtype=torch.bool, device=c.device)
            while rows.numel():
                if gram is not None:  # the sets' Gram matrices, read from the dictionary's
                    GS = _gather_square(gram, idx)
                else:
                    WS = W[idx]  # (b, k, d)
                    GS = torch.bmm(WS, WS.transpose(1, 2))
                    flops[rows] += 2.0 * k * k * d
                cS = c.view(-1).index_select(0, (idx + (rows * n).unsqueeze(1)).view(-1)).view(idx.shape)
                # samples whose codes are exact on their last set (or that start) take them with the
                # violators added as the first active-set guess below; the others iterate first
                run = (~fresh).nonzero().squeeze(1)
                if run.numel():
                    whole = run.numel() == rows.numel()
                    G_r, c_r, s_r = (GS, cS, sS) if whole else (GS[run], cS[run], sS[run])
                    s_r, used = self._iterate_small(s_r, G_r, c_r, 1.0 / _set_lipschitz(G_r, L),
                                                    self.max_iter - iters[rows[run]], tol[run])  # fmt: skip
                    if whole:
                        sS = s_r
                    else:
                        sS[run] = s_r
                    iters[rows[run]] += used
                    flops[rows[run]] += used * (2.0 * k * k + 11.0 * k) + 2.0 * k * k
                # the exact minimiser on the set, where the iterates' support and signs give it; a round
                # of exact solves counts as one iteration (so ``max_iter`` bounds the rounds too)
                sE, exact, solves = self._solve_support(sS, GS, cS, eps)
                iters[rows[fresh]] += 1.0
                sS = torch.where(exact[:, None], sE, sS)
                flops[rows] += solves * (k**3 / 3.0 + 6.0 * k * k) + 2.0 * k * k
                # optimality outside the set: |(x − s·W)·Wᵀ| <= penalty on every atom (g <= penalty if s >= 0)
                grow = min(self._WS_GROW, n - k)
                margin = torch.where(exact, eps, lam * tol.sqrt())  # beyond the iterate's own accuracy
                if grow > 0:
                    # the residual from the set's atoms alone (a weighted sum of k rows of ``W`` per sample)
                    r = x[rows].sub_(F.embedding_bag(idx, W, per_sample_weights=sS, mode="sum"))
                    score = self._violation(r @ W.T)
                    top, new = score.scatter_(1, idx, -math.inf).topk(grow, dim=1)
                    joins = top > margin[:, None]  # the largest violators outside the set
                    bad = joins[:, 0]
                    flops[rows] += 4.0 * n * d
                else:  # the set holds every atom
                    bad = torch.zeros_like(exact)
                    joins = new = torch.zeros_like(idx[:, :0])
                out_of_budget = iters[rows] >= self.max_iter
                # done: exact with no violator outside, or (as without exact solves) iterated to ``tol``
                converged = ~fresh & (tol <= self.tol)
                finished = (~bad & (exact | converged)) | out_of_budget
                codes[rows[finished]] = codes[rows[finished]].scatter_(1, idx[finished], sS[finished])
                # a complete set whose iterates did not give its exact solution: iterate on to a tighter
                # tolerance (a sample that did not iterate this round iterates at its own first)
                tighter = ~bad & ~exact & ~fresh
                tol = torch.where(tighter, (tol * self._WS_TIGHTEN).clamp_min_(self.tol), tol)
                keep = ~finished
                rows, sS, idx, tol, fresh, bad, joins, new = _select(keep, rows, sS, idx, tol, exact, bad, joins, new)
                if not rows.numel():
                    break
                if not bool(bad.any()):  # every remaining set is complete: iterate on
                    continue
                active = sS != 0
                need = active.sum(1) + joins.sum(1)
                big = need > k_max
                if bool(big.any()):
                    # large supports: these samples finish on the full problem from here
                    s_full = torch.zeros(int(big.sum()), n, dtype=c.dtype, device=c.device)
                    s_full.scatter_(1, idx[big], sS[big])
                    out = torch.empty_like(s_full)
                    budget = int((self.max_iter - iters[rows[big]]).max())
                    at = torch.full((s_full.shape[0],), float(budget), device=c.device)
                    self._solve(s_full, c[rows[big]] * (1.0 / L), self._full_ops(W, c.dtype, 1.0 / L), lam / L, out,
                                at, budget)  # fmt: skip
                    codes[rows[big]] = out
                    flops[rows[big]] += at.to(c.dtype) * self._dense_iteration_flops()
                    iters[rows[big]] += at.to(c.dtype)
                    small = ~big
                    rows, sS, idx, tol, fresh, active, need, joins, new = _select(
                        small, rows, sS, idx, tol, fresh, active, need, joins, new
                    )
                    if not rows.numel():
                        break
                # the next sets: each sample's support, then its violators, then the rest of its last set
                rank = torch.cat([active.to(torch.int8) * 2, joins.to(torch.int8) - (~joins).to(torch.int8)], 1)
                order = torch.argsort(rank, dim=1, descending=True, stable=True)
                k = min(n, max(self._WS_START, int(need.max())))
                order = order[:, :k]
                idx = torch.cat([idx, new], 1).gather(1, order)
                sS = torch.cat([sS, sS.new_zeros(sS.shape[0], grow)], 1).gather(1, order)

        if workers == 1:
            for start in starts:
                block(start)
        else:
            with ThreadPoolExecutor(workers) as pool:
                list(pool.map(block, starts))
        return codes, iters, flops

    #: primal-dual active-set steps on the whole dictionary before the working sets take over
    _AS_STEPS = 12
    #: most atoms that join a support per active-set step
    _AS_GROW = 3

    def _active_set(
        self, c: Tensor, gram: Tensor, gram_rows: Tensor, gram_rows32: Tensor, eps: float, max_size: int, steps: int
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Primal-dual active-set steps on the whole dictionary, from zero codes.

        ``c = x·Wᵀ`` is ``(b, n)``, in float64; ``gram`` is the dictionary's Gram matrix in float64
        bordered by an identity block of ``max_size`` padding atoms (``(n + max_size, n + max_size)``),
        ``gram_rows`` its first ``n`` columns and ``gram_rows32`` those in float32. Each step solves
        ``G_AA·s_A = c_A − penalty·σ`` for each sample's support ``A`` and signs ``σ`` by one batched
        Cholesky factorisation (supports padded to the largest with padding atoms, whose rows are the
        identity's) and computes the whole gradient ``c − s·G`` from the support's rows of ``G`` in
        float32: it chooses the atoms that join and the samples that may be done, whose lasso
        optimality conditions are then confirmed in float64 on every atom: ``s_A`` keeps the signs
        ``σ``, ``|c_A − G_A·s − penalty·σ| <= eps`` and ``|c_j − G_j·s| <= penalty + eps`` elsewhere
        (without the absolute value if codes are non-negative). A sample where they hold is done;
        otherwise the atoms whose sign flipped leave its support and up to ``_AS_GROW`` atoms whose
        gradient most exceeds the penalty join it with the gradient's sign. A sample whose support
        would exceed ``max_size`` atoms, whose support is (nearly) dependent, whose float32 check
        is not confirmed, or that is not done after ``steps`` steps is left to the working sets.
        Returns the codes (``(b, n)``, zero where not done), the ``(b,)`` mask of the samples done,
        and the steps and FLOPs spent per sample.
        """
        b, n = c.shape
        lam = self.penalty
        dev = c.device
        codes = torch.zeros_like(c)
        done = torch.zeros(b, dtype=torch.bool, device=dev)
        used = torch.zeros(b, dtype=c.dtype, device=dev)
        flops = torch.zeros(b, dtype=c.dtype, device=dev)
        rows = torch.arange(b, device=dev)
        c64, c32 = c, c.float()
        top, idx = (c32 if self.nonnegative else c32.abs()).topk(min(n, self._AS_GROW, max_size), dim=1)
        on = top > lam + eps
        sg = c.gather(1, idx).sign()
        grow = min(n, self._AS_GROW)
        for _ in range(steps):
            # each support first, padded to the largest with distinct padding atoms (index ``n`` in ``idx``)
            m = int(on.sum(1).max())
            if m:
                order = torch.argsort((~on).to(torch.uint8), dim=1, stable=True)[:, :m]
                idx, on, sg = idx.gather(1, order), on.gather(1, order), sg.gather(1, order)
            else:
                idx, on, sg = idx[:, :0], on[:, :0], sg[:, :0]
            idx = idx.masked_fill(~on, n)
            ids = torch.where(on, idx, n + torch.arange(m, device=dev))
            if m:
                M = _gather_square(gram, ids)
                chol, info = torch.linalg.cholesky_ex(M)
                # a failed factorisation, or a pivot that keeps less than 1e-9 of its atom's squared norm:
                # a (nearly) dependent support
                ok = (info == 0) & (chol.diagonal(dim1=1, dim2=2).square() >= 1e-9 * M.diagonal(dim1=1, dim2=2)).all(1)
                cA = c64.view(-1).index_select(0, (idx.clamp_max(n - 1) + (rows * n).unsqueeze(1)).view(-1))
                rhs = torch.where(on, cA.view(idx.shape) - lam * sg, 0.0)
                sol = torch.cholesky_solve(rhs.unsqueeze(2), chol).squeeze(2).masked_fill_(~on, 0.0)
            else:
                ok = torch.ones(rows.numel(), dtype=torch.bool, device=dev)
                sol = c.new_zeros(rows.numel(), 0)
            # the whole gradient in float32 chooses the atoms that join (and flags the samples that may be
            # done); float64 confirms the optimality conditions of those samples before they are
            g = _gradient(c32, gram_rows32, ids, sol.float(), n)
            keeps = (sol * sg > 0) | ~on
            viol = g if self.nonnegative else g.abs()
            viol.scatter_(1, idx, -math.inf)
            top, new = viol[:, :n].topk(grow, dim=1)
            joins = top > lam + eps
            good = ok & keeps.all(1) & ~joins[:, 0]
            if bool(good.any()):
                at = good.nonzero().squeeze(1)
                ida, sga = idx[at], sg[at]
                g64 = _gradient(c64[rows[at]], gram_rows, ids[at], sol[at], n)
                stationary = ((g64.gather(1, ida) - lam * sga).abs() <= eps) | (ida == n)
                v64 = g64 if self.nonnegative else g64.abs()
                confirmed = stationary.all(1) & (v64.scatter_(1, ida, -math.inf)[:, :n].amax(1) <= lam + eps)
                good[at] = confirmed
                ok[at] &= confirmed  # not confirmed (a float32 rounding): left to the working sets
            used[rows] += 1.0
            flops[rows] += m**3 / 3.0 + 4.0 * m * m + 2.0 * m * n + 8.0 * n
            if bool(good.any()):
                at = rows[good]
                full = torch.zeros(at.numel(), n + 1, dtype=c.dtype, device=dev).scatter_(1, idx[good], sol[good])
                codes[at] = full[:, :n]
                done[at] = True
            # the next supports: the atoms that kept their sign, and the largest violators with the
            # gradient's sign (a support that would outgrow ``max_size`` leaves for the working sets)
            cont = ~good & ok & ((on & keeps).sum(1) + joins.sum(1) <= max_size)
            if not bool(cont.any()):
                break
            sg = torch.cat([sg, g.gather(1, new).sign().to(sg.dtype)], 1)
            on = torch.cat([on & keeps, joins], 1)
            idx = torch.cat([idx, new], 1)
            rows, c32, idx, on, sg = _select(cont, rows, c32, idx, on, sg)
        return codes, done, used, flops

    #: active-set corrections tried after the iterates' own support and signs
    _SUPPORT_CORRECTIONS = 8
    #: most atoms a correction adds to a support
    _SUPPORT_ADD = 2

    def _solve_support(self, s: Tensor, G: Tensor, c: Tensor, eps: float) -> tuple[Tensor, Tensor, Tensor]:
        """The exact lasso solution on each working set, from the support and signs of its iterate.

        With support ``A`` and signs ``σ``, the minimiser on the set solves ``G_AA·s_A = c_A − penalty·σ``
        (``G`` the set's Gram matrix ``(b, k, k)``, ``c = x·W_Sᵀ``); it is the set's solution exactly
        when the optimality conditions hold: ``s_A`` keeps the signs ``σ`` and every other atom of the
        set has ``|c_j − G_j·s| <= penalty`` (``<=`` without the absolute value if codes are
        non-negative), to ``eps``. The first guess is the support and signs of ``s`` (``(b, k)``);
        where it fails, the next drops the atoms whose sign flipped and adds those whose gradient
        exceeds the penalty (a primal-dual active-set step), up to ``_SUPPORT_CORRECTIONS`` times.
        The systems are solved in float64 by batched Cholesky (the identity outside the supports); a
        nearly singular one (duplicate or strongly correlated atoms) drops the dependent atom and is
        tried again, within the same number of corrections. Returns the solutions (zero outside the
        supports, in ``s``'s dtype), a ``(b,)`` mask of the samples where they hold and the number of
        systems solved per sample.
        """
        lam = self.penalty
        f64 = torch.float64
        G, c = G.to(f64), c.to(f64)
        # the first guess: the support and signs of ``s``, with the atoms whose gradient exceeds the penalty
        g = c - torch.bmm(G, s.to(f64).unsqueeze(2)).squeeze(2)
        over = (g if self.nonnegative else g.abs()) > lam + eps
        active = (s != 0) | over
        sign = torch.where(over & (s == 0), g.sign(), s.sign().to(f64))
        best = torch.zeros_like(c)
        found = torch.zeros(s.shape[0], dtype=torch.bool, device=s.device)
        solves = torch.zeros(s.shape[0], dtype=s.dtype, device=s.device)
        rows = torch.arange(s.shape[0], device=s.device)
        for attempt in range(self._SUPPORT_CORRECTIONS + 1):
            sol, ok, dependent = _solve_supports(G, c - lam * sign, active)
            g = c - torch.bmm(G, sol.unsqueeze(2)).squeeze(2)  # minus the gradient of the smooth part
            keeps_sign = (sol * sign > 0) | ~active
            stationary = ((g - lam * sign).abs() <= eps) | ~active
            over = (g if self.nonnegative else g.abs()) > lam + eps
            good = ok & (keeps_sign & stationary & (active | ~over)).all(1)
            solves[rows] += 1.0
            best[rows[good]] = sol[good]
            found[rows[good]] = True
            retry = ~good & (ok | (dependent >= 0))
            if attempt == self._SUPPORT_CORRECTIONS or not bool(retry.any()):
                break
            # the next guess keeps the atoms that kept their sign and adds the few that most exceed the
            # penalty (adding every one can make the support dependent); a dependent support drops the
            # atom that makes it so (a duplicate's twin carries its code)
            excess = torch.where(over & ~active, (g if self.nonnegative else g.abs()), -math.inf)
            top = excess.topk(min(self._SUPPORT_ADD, excess.shape[1]), dim=1)
            add = torch.zeros_like(over).scatter_(1, top.indices, top.values > -math.inf) & ok[:, None]
            drop = torch.zeros_like(over).scatter_(1, dependent.clamp_min(0).unsqueeze(1), (~ok).unsqueeze(1))
            active = torch.where(ok[:, None], active & keeps_sign, active & ~drop) | add
            active, sign, rows, G, c = _select(retry, active, torch.where(add, g.sign(), sign), rows, G, c)
        return best.to(s.dtype), found, solves

    def _violation(self, g: Tensor) -> Tensor:
        """How much each atom's gradient exceeds the penalty (``> 0``: the atom should be active)."""
        return (g if self.nonnegative else g.abs()).sub_(self.penalty)

    def _iterate_small(
        self, s: Tensor, G: Tensor, c: Tensor, step: Tensor, budget: Tensor, tol: Tensor
    ) -> tuple[Tensor, Tensor]:
        """(F)ISTA on per-sample working sets: ``s`` ``(b, k)``, Gram ``G`` ``(b, k, k)``, ``c = x·W_Sᵀ``,
        ``step`` ``(b, 1)``; each sample stops when its largest code change is at most its ``tol`` times
        its largest code, or after ``budget`` iterations. Returns
        the codes and the iterations each sample ran."""
        out = s.clone()
        used = torch.zeros(s.shape[0], dtype=s.dtype, device=s.device)
        thr = step * self.penalty
        cs = c * step
        y = s.clone()
        t = torch.ones(s.shape[0], 1, dtype=s.dtype, device=s.device)
        rows = torch.arange(s.shape[0], device=s.device)
        limit = budget.clone()
        it = 0
        while rows.numel():
            it += 1
            z = y - step * torch.bmm(y.unsqueeze(1), G).squeeze(1) + cs
            s_new = (z - thr).clamp_min_(0) if self.nonnegative else z - torch.maximum(torch.minimum(z, thr), -thr)
            diff = s_new - s
            if self.momentum:
                restart = ((y - s_new) * diff).sum(1, keepdim=True) > 0
                t = torch.where(restart, torch.ones_like(t), t)
                t_new = 0.5 * (1.0 + torch.sqrt(1.0 + 4.0 * t * t))
                y = s_new + diff * ((t - 1.0) / t_new)
                t = t_new
            else:
                y = s_new
            s = s_new
            change = diff.abs().amax(1)
            scale = s.abs().amax(1).clamp_min(1e-12)
            stop = (change <= tol * scale) | (limit <= it)
            if bool(stop.any()):
                out[rows[stop]] = s[stop]
                used[rows[stop]] = float(it)
                rows, s, y, t, G, cs, step, thr, limit, tol = _select(
                    ~stop, rows, s, y, t, G, cs, step, thr, limit, tol
                )
        return out, used

    def flops_per_sample(self) -> float:
        warm = self.warm_start.flops_per_sample() if self.warm_start is not None else 0.0
        if self._last_flops is not None:  # counted by the working-set solve
            return self._last_flops + warm
        n, d = self.num_latents, self.in_features
        return float(2 * n * d + self.last_iterations * self._dense_iteration_flops() + warm)


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
