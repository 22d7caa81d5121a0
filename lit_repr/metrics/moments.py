"""Streaming first and second moments about a reference, merged exactly across batches and processes.

Raw sums (``Σx``, ``XᵀX``) centred only at the end lose the answer when features have a large mean
relative to their spread: ``XᵀX/n − x̄x̄ᵀ`` subtracts two numbers of size ``x̄²`` to get one of size
``σ²``, and float64 keeps only about 16 digits of the difference. Activations do this (residual
streams carry large constant directions), and so do targets such as ``1e8 + digit``.

:class:`ShiftedMoments` keeps the moments about a *reference* instead: each process takes the mean of
(the first 1024 rows of) its first batch as reference ``r`` and accumulates ``n``, ``Σ(x − r)``,
``Σ(x − r)(y − s)ᵀ`` and ``Σ(x − r)⊙(y − s)``. Those are as small as the spread of the data, so
centring at the end loses nothing. Batches and processes with different references are combined exactly by moving every
set of moments to one common reference (the reference of the part with the most samples) with

``Σ(x − r')  = Σ(x − r) + n δ``,
``Σ(x − r')(y − s')ᵀ = Σ(x − r)(y − s)ᵀ + Σ(x − r) εᵀ + δ Σ(y − s)ᵀ + n δ εᵀ``

(``δ = r − r'``, ``ε = s − s'``) and summing; this is the pairwise update of Chan, Golub and LeVeque
(1979) written for any reference. Under DDP the states of all processes are gathered and merged
this way (:meth:`ShiftedMoments._sync_dist`), and so are the batch and accumulated states of
``forward`` and :meth:`~torchmetrics.Metric.merge_state`. Memory stays ``O(D²)``; an update costs what
a raw-moment update costs plus one subtraction of the reference.

A checkpoint written before the references existed holds raw moments, which are moments about the
reference 0: it loads exactly (with references 0).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities.distributed import gather_all_tensors

from lit_repr.threads import blas_threads, num_threads

try:  # BLAS dsyrk (the triangle of a Gram matrix) from the scipy the project depends on
    from scipy.linalg.blas import dsyrk as _dsyrk
except ImportError:  # pragma: no cover - scipy is a dependency; without it the column-block path serves
    _dsyrk = None

__all__ = ["ShiftedMoments", "CentredR2Score", "NonFiniteBatch", "add_gram", "all_finite", "symmetrise_"]

States = dict[str, Tensor]
_REFERENCE_ROWS = 1024
#: elements per variable of the row blocks a large batch is accumulated in (8 MiB of float64)
_CHUNK_ELEMENTS = 2**20
#: elements of the row blocks of the one-Gram path (32 MiB of float64): fewer, larger dsyrk calls were
#: both faster and steadier (40,000 x 513: 0.18-0.19 s against 0.20-0.23 s with 8 MiB blocks)
_GRAM_BLOCK_ELEMENTS = 2**22


def all_finite(x: Tensor) -> bool:
    """Whether ``x`` holds no NaN or inf (one reduction in the common case)."""
    if not x.is_floating_point():
        return True
    if math.isfinite(x.sum().item()):  # (a Python float: no 0-d tensor op per batch)
        return True
    return bool(torch.isfinite(x).all())  # the sum may overflow although every entry is finite


class NonFiniteBatch(ValueError):
    """A batch was refused by :meth:`ShiftedMoments.add_checked`; no state changed.

    Args:
        variables: the variables whose values were not all finite, or whose squares overflow float64.
        overflow: the values of those variables were finite, but so large that their squares are not.

    Example:
        >>> str(NonFiniteBatch(["x"]))
        "the batch of 'x' contains NaN or inf; nothing was accumulated"
    """

    def __init__(self, variables: list[str], overflow: bool = False) -> None:
        self.variables, self.overflow = list(variables), overflow
        names = " and ".join(repr(v) for v in self.variables)
        why = "holds values whose squares overflow float64" if overflow else "contains NaN or inf"
        super().__init__(f"the batch of {names} {why}; nothing was accumulated")


def _syrk_upper(u: Tensor, c: "np.ndarray | None" = None) -> "np.ndarray":
    """The upper triangle of ``uᵀu`` (``u``: ``(B, D)`` float64 on the CPU) by BLAS ``dsyrk``, added to ``c``.

    ``dsyrk`` forms only the triangle: ``B·D²`` multiply-adds, half of a general product, at close to the
    speed of one. ``c`` (``(D, D)``, Fortran order, from an earlier call) is updated in place; without it
    a new array is returned whose strict lower triangle is zero.
    """
    a = u.numpy() if u.is_contiguous() else np.ascontiguousarray(u.numpy())
    if c is None:
        return _dsyrk(1.0, a.T, trans=0, lower=0)  # aᵀ is (D, B) in Fortran order: no copy
    return _dsyrk(1.0, a.T, beta=1.0, c=c, trans=0, lower=0, overwrite_c=1)


def _less_outer(state: Tensor, a: Tensor, b: Tensor, n: Tensor) -> Tensor:
    """``state − a bᵀ / n`` in one new tensor (the same values as that expression, without its two
    full-size temporaries: at 2,049 × 2,049 each is 32 MiB to allocate, fault in and write)."""
    out = torch.outer(a, b).div_(n)
    return torch.sub(state, out, out=out)


def _blocks_on_and_above(d: int, block: int) -> Iterator[tuple[slice, slice]]:
    """``(rows, cols)`` of the ``block × block`` tiles of a ``d × d`` matrix on and above its diagonal."""
    for i in range(0, d, block):
        for j in range(i, d, block):
            yield slice(i, min(i + block, d)), slice(j, min(j + block, d))


def symmetrise_(a: Tensor, block: int = 256) -> Tensor:
    """``a`` replaced in place by ``(a + aᵀ) / 2``, the same values, block by block.

    No full-size temporary and no strided pass over the whole matrix: at 2,049 × 2,049, about half
    the time of ``(a + a.T) / 2``. ``a`` must own its memory (no other view of it is read meanwhile).

    Example:
        >>> symmetrise_(torch.tensor([[1.0, 2.0], [4.0, 3.0]]))
        tensor([[1., 3.],
                [3., 3.]])
    """
    for rows, cols in _blocks_on_and_above(a.shape[0], block):
        upper, lower = a[rows, cols], a[cols, rows]
        mean = (upper + lower.T) / 2
        upper.copy_(mean)
        if rows != cols:
            lower.copy_(mean.T)
    return a


def _add_mirrored(out: Tensor, upper: Tensor, block: int = 256) -> Tensor:
    """``out`` plus the exactly symmetric matrix whose upper triangle (diagonal included) is ``upper``'s,
    for an ``upper`` whose strict lower triangle is zero (as ``dsyrk`` leaves it). The mirror is added
    block by block (no full-size temporary, no strided pass over the whole matrix); the same values."""
    out.add_(upper)
    for rows, cols in _blocks_on_and_above(out.shape[0], block):
        out[cols, rows].add_(upper[rows, cols].T.tril(-1) if rows == cols else upper[rows, cols].T)
    return out


def _use_syrk(u: Tensor) -> bool:
    return _dsyrk is not None and u.device.type == "cpu" and u.dtype == torch.float64 and u.shape[0] > 0


def add_gram(out: Tensor, u: Tensor) -> Tensor:
    """``out += uᵀu`` (``u``: ``(B, D)``), exactly symmetric, from the triangle on and above the diagonal.

    On the CPU in float64 the triangle is one BLAS ``dsyrk`` (``B·D²`` multiply-adds, half of a general
    product); elsewhere it is formed from column blocks on and above the diagonal, about ``(k + 1) / 2k``
    of the multiply-adds of one general product for ``k`` column blocks (5/8 at ``k = 4``, ``D ≥ 128``).
    Measured on 2 cores, 40,000 × 512 float64: 0.12 s by ``dsyrk``, 0.16 s by column blocks, 0.22 s for
    ``u.T @ u``.
    """
    if _use_syrk(u) and out.dtype == torch.float64:
        with blas_threads(torch.get_num_threads()):  # the caller's torch threads, not more
            return _add_mirrored(out, torch.from_numpy(_syrk_upper(u)))
    d = u.shape[1]
    k = 4 if d >= 128 else 2 if d >= 64 else 1
    edges = [i * d // k for i in range(k + 1)]
    upper = torch.zeros_like(out) if k > 1 else u.T @ u
    for a, b in zip(edges[:-1], edges[1:]) if k > 1 else ():
        upper[a:b, a:].addmm_(u[:, a:b].T, u[:, a:])
    return _add_mirrored(out, upper.triu_())


class ShiftedMoments(Metric):
    """Base of the Metrics whose states are moments about a per-process reference (see the module).

    A subclass calls :meth:`add_moments` in its ``__init__`` to declare its variables (each with a
    reference state and a state of sums), the full cross-products ``Σ(v − r_v)(w − r_w)ᵀ`` and the
    element-wise products ``Σ(v − r_v)⊙(w − r_w)`` it needs; :meth:`accumulate` adds a batch and
    :meth:`centred` gives the means and the centred sums. Other states declared with
    ``dist_reduce_fx="sum"`` are summed; states that depend on the reference are moved by
    :meth:`move_extra_states`.

    Args:
        **kwargs: passed to :class:`torchmetrics.Metric`.

    Example:
        >>> class Mean(ShiftedMoments):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.add_moments(variables={"x": ("sum_x", 1)}, products={}, elementwise={"sq_x": ("x", "x")})
        ...     def update(self, x):
        ...         self.accumulate(x=x[:, None].double())
        ...     def compute(self):
        ...         n, mean, _, sq = self.centred()
        ...         return mean["x"], sq["sq_x"] / n
        >>> f64 = torch.float64
        >>> m = Mean()
        >>> m.update(torch.tensor([1e8 + 1, 1e8 + 3], dtype=f64)); m.update(torch.tensor([1e8 + 5], dtype=f64))
        >>> [round(float(v), 6) for v in m.compute()]
        [100000003.0, 2.666667]
    """

    is_differentiable = False
    higher_is_better = None
    full_state_update = False

    n: Tensor

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._variables: dict[str, tuple[str, str]] = {}  # variable -> (reference state, sum state)
        self._products: dict[str, tuple[str, str]] = {}
        self._elementwise: dict[str, tuple[str, str]] = {}

    # ------------------------------------------------------------------ declaration
    def add_moments(
        self,
        variables: Mapping[str, tuple[str, int]],
        products: Mapping[str, tuple[str, str]],
        elementwise: Mapping[str, tuple[str, str]],
        count: str = "n",
    ) -> None:
        """Declare the count state, ``{variable: (sum state, width)}``, ``{state: (v, w)}`` full products
        ``(D_v, D_w)`` and ``{state: (v, w)}`` element-wise products (``D_v == D_w``), all float64.
        Each variable ``v`` gets a reference state ``v_ref``."""
        f64 = torch.float64
        if count != "n":
            raise ValueError(f"the count state must be named 'n', got {count!r}")
        self.add_state("n", torch.zeros((), dtype=f64), dist_reduce_fx="sum")
        widths = {}
        for v, (sum_name, width) in variables.items():
            widths[v] = width
            self.add_state(f"{v}_ref", torch.zeros(width, dtype=f64), dist_reduce_fx=None)
            self.add_state(sum_name, torch.zeros(width, dtype=f64), dist_reduce_fx="sum")
            self._variables[v] = (f"{v}_ref", sum_name)
        for name, (v, w) in products.items():
            # the default (what reset() clones) is one zero expanded to the shape: no D x D default to
            # allocate, fill and deep-copy (at D = 2,048: 32 MiB and ~10 ms per state)
            shape = (widths[v], widths[w])
            self.add_state(name, torch.zeros(0, dtype=f64), dist_reduce_fx="sum")  # (torchmetrics densifies it)
            self._defaults[name] = torch.zeros((), dtype=f64).expand(shape)
            setattr(self, name, torch.zeros(shape, dtype=f64))
            self._products[name] = (v, w)
        for name, (v, w) in elementwise.items():
            if widths[v] != widths[w]:
                raise ValueError(f"element-wise product {name!r} needs equal widths, got {widths[v]} and {widths[w]}")
            self.add_state(name, torch.zeros(widths[v], dtype=f64), dist_reduce_fx="sum")
            self._elementwise[name] = (v, w)

    # ------------------------------------------------------------------ accumulation
    #: form the sums and products of float32 batches in float32 (per batch, then added to the float64
    #: states); see :meth:`accumulate`
    float32_products: bool = False

    def accumulate(self, return_centred: bool = True, **batches: Tensor) -> dict[str, Tensor]:
        """Add one batch per variable (``(B, D_v)``, same ``B``, any float dtype) and return them about their
        references, in float64 (an empty dict with ``return_centred=False``).

        The first non-empty batch of a process (``n == 0``) sets the references to the means of its first
        rows (up to 1024). A batch that is not float64 yet is converted once and its reference subtracted
        in place; with ``return_centred=False`` a large batch is taken in blocks of rows (about 2²⁰
        elements per variable), each converted and multiplied while it is in cache.

        With ``float32_products`` (off by default) a float32 batch stays float32: its reference is
        rounded to float32, so ``x − r`` is the correctly rounded difference; its sums and the products
        of the centred batch are formed in float32 (a float64 partner is split into two float32 parts)
        and added to the float64 states. About twice the speed of float64 products and half their
        memory traffic, at the price of float32 rounding (relative ``≈ 1e-7``) in every batch: results
        then depend on the batching and the process split at that level, not at float64's.
        """
        b = next(iter(batches.values())).shape[0]
        if b == 0:
            return {v: x.to(torch.float64) for v, x in batches.items()} if return_centred else {}
        if not return_centred and self._one_gram(batches):
            self._accumulate_gram(batches)
            return {}
        rows = max(_REFERENCE_ROWS, _CHUNK_ELEMENTS // max(x.shape[1] if x.ndim == 2 else 1 for x in batches.values()))
        if not return_centred and b > rows:
            # a large batch goes in blocks of rows: each block is converted, centred and multiplied while it
            # is in cache (no full-size float64 copy); the same sums, added in another order
            for start in range(0, b, rows):
                self.accumulate(return_centred=False, **{v: x[start : start + rows] for v, x in batches.items()})
            return {}
        empty = bool(self.n == 0)
        centred, low = {}, {}
        for v, x in batches.items():
            ref_name, sum_name = self._variables[v]
            if self.float32_products and x.dtype == torch.float32:
                if empty:
                    setattr(self, ref_name, x[:_REFERENCE_ROWS].mean(0, dtype=torch.float64).float().double())
                ref = getattr(self, ref_name)
                ref32 = ref.float()
                if not torch.equal(ref32.double(), ref):  # a float64 reference (set by float64 data): exact path
                    ref32 = None
            else:
                ref32 = None
            if ref32 is not None:
                low[v] = x - ref32
                getattr(self, sum_name).add_(low[v].sum(0).double())
                continue
            x64 = x.to(torch.float64)
            if empty:  # any reference within the spread of the data does: the first rows' mean is enough
                setattr(self, ref_name, x64[:_REFERENCE_ROWS].mean(0))
            ref = getattr(self, ref_name)
            u = x64.sub_(ref) if x64 is not x else x64 - ref  # never change the caller's tensor
            centred[v] = u
            getattr(self, sum_name).add_(u.sum(0))
        for name, (v, w) in self._products.items():
            state = getattr(self, name)
            if v in low and w in low:
                state.add_(low[v].T @ low[w])
            elif v in low or w in low:
                a, c = (low[v], centred[w]) if v in low else (low[w], centred[v])
                hi = c.float()
                part = a.T @ hi + a.T @ (c - hi.double()).float()  # (D_low, D_other)
                state.add_(part if v in low else part.T)
            elif v == w:
                add_gram(state, centred[v])
            else:
                state.addmm_(centred[v].T, centred[w])
        for name, (v, w) in self._elementwise.items():
            cv = centred[v] if v in centred else low[v].double()
            cw = centred[w] if w in centred else low[w].double()
            getattr(self, name).add_((cv * cw).sum(0))
        self.n += b
        if not return_centred:
            return {}
        return {**centred, **{v: u.double() for v, u in low.items()}}

    def _one_gram(self, batches: Mapping[str, Tensor]) -> bool:
        """Whether every sum and product of this batch comes from one Gram matrix (see :meth:`_accumulate_gram`)."""
        if _dsyrk is None or set(batches) != set(self._variables) or not self._products:
            return False
        xs = list(batches.values())
        if any(x.device.type != "cpu" or x.ndim != 2 or x.is_complex() for x in xs):
            return False
        if self.float32_products and any(x.dtype == torch.float32 for x in xs):
            return False
        widths = {v: x.shape[1] for v, x in batches.items()}
        width = sum(widths.values()) + 1
        needed = sum(widths[v] * widths[w] / (2 if v == w else 1) for v, w in self._products.values())
        # the Gram forms every product of every pair of variables: worth it while the unused ones are few
        return width * width / 2 <= 1.25 * needed + 4 * width

    def add_checked(self, **batches: Tensor) -> None:
        """Add one batch per variable, as ``accumulate(return_centred=False, ...)``, if its values are finite.

        Otherwise raise :class:`NonFiniteBatch` naming the variables at fault, with no state changed.
        On the one-Gram path (float64 products of CPU batches, see :meth:`_accumulate_gram`) the check
        costs nothing: it reads the diagonal of the batch's Gram matrix, ``Σ(v − r_v)²``, before any state
        changes. That diagonal is finite exactly when every value is finite and no square overflows, so
        it also refuses values too large for float64 products (beyond ``≈ 1e154``), which would
        otherwise leave infinite sums. Elsewhere each batch is checked for NaN and inf first.
        """
        b = next(iter(batches.values())).shape[0]
        if b > 0 and self._one_gram(batches):
            self._accumulate_gram(batches, check=True)
            return
        bad = [v for v, x in batches.items() if not all_finite(x)]
        if bad:
            raise NonFiniteBatch(bad)
        self.accumulate(return_centred=False, **batches)

    def _accumulate_gram(self, batches: Mapping[str, Tensor], check: bool = False) -> None:
        """Add a batch from the Gram matrix of ``[x₁ − r₁ | x₂ − r₂ | … | 1]`` (float64, CPU).

        One BLAS ``dsyrk`` per block of rows forms the triangle of that matrix: every declared product
        (``Σ(v − r_v)(w − r_w)ᵀ`` is a block of it), every element-wise product (a block's diagonal) and
        every sum (the last column) in one pass over the block, at half the multiply-adds of a general
        product. Each block is converted, centred and written into one buffer; the states (references
        included) change only after the last block, and with ``check`` only if the diagonal is finite
        (see :meth:`add_checked`).
        """
        names = list(self._variables)
        widths = [batches[v].shape[1] for v in names]
        offsets = dict(zip(names, np.cumsum([0, *widths[:-1]]).tolist()))
        span = {v: slice(offsets[v], offsets[v] + w) for v, w in zip(names, widths)}
        width = sum(widths) + 1
        b = next(iter(batches.values())).shape[0]
        first = bool(self.n == 0)
        if first:  # any reference within the spread of the data does: the first rows' mean is enough
            refs = {v: batches[v][:_REFERENCE_ROWS].mean(0, dtype=torch.float64) for v in names}
        else:
            refs = {v: getattr(self, self._variables[v][0]) for v in names}
        rows = min(b, max(256, _GRAM_BLOCK_ELEMENTS // width))
        buf = torch.empty(rows, width, dtype=torch.float64)
        buf[:, -1] = 1.0
        with blas_threads(torch.get_num_threads()):  # the caller's torch threads, not more
            gram = self._gram_blocks(batches, refs, span, buf)
        if check:
            diagonal = np.diagonal(gram)
            bad = [v for v in names if not np.isfinite(diagonal[span[v]]).all()]
            if bad:
                raise NonFiniteBatch(bad, overflow=all(all_finite(batches[v]) for v in bad))
        if first:
            for v in names:
                setattr(self, self._variables[v][0], refs[v])
        g = torch.from_numpy(gram)  # upper triangle; its strict lower triangle is zero
        for v in names:
            getattr(self, self._variables[v][1]).add_(g[span[v], -1])
        for name, (v, w) in self._products.items():
            if v == w:
                _add_mirrored(getattr(self, name), g[span[v], span[v]])
            else:
                getattr(self, name).add_(g[span[v], span[w]] if offsets[v] < offsets[w] else g[span[w], span[v]].T)
        for name, (v, w) in self._elementwise.items():
            lo, hi = (v, w) if offsets[v] <= offsets[w] else (w, v)
            getattr(self, name).add_(torch.diagonal(g[span[lo], span[hi]]))
        self.n += b

    @staticmethod
    def _gram_blocks(batches: Mapping[str, Tensor], refs: Mapping[str, Tensor], span: dict[str, slice],
                     buf: Tensor) -> np.ndarray:
        """The triangle of the Gram matrix of the batch about ``refs``, block by block of ``len(buf)`` rows."""
        b, rows, gram = next(iter(batches.values())).shape[0], buf.shape[0], None
        for start in range(0, b, rows):
            block = buf[: min(rows, b - start)]
            with num_threads(1):  # (torch's waiting threads would take the cores from the BLAS threads)
                for v in refs:  # a copy, then an in-place subtraction: 4x faster than one mixed-dtype sub
                    block[:, span[v]].copy_(batches[v][start : start + block.shape[0]]).sub_(refs[v])
            gram = _syrk_upper(block, gram)
        return gram

    # ------------------------------------------------------------------ reading
    def centred(self) -> tuple[Tensor, dict[str, Tensor], dict[str, Tensor], dict[str, Tensor]]:
        """``(n, {v: mean}, {product: centred sum}, {element-wise: centred sum})`` (sums, not averages).

        With ``n == 0`` the means are the references (zeros) and the sums zero.
        """
        n = self.n
        nn = n.clamp_min(1)
        sums = {v: getattr(self, s) for v, (_, s) in self._variables.items()}
        means = {v: getattr(self, r) + sums[v] / nn for v, (r, _) in self._variables.items()}
        prods = {k: _less_outer(getattr(self, k), sums[v], sums[w], nn) for k, (v, w) in self._products.items()}
        elem = {k: getattr(self, k) - sums[v] * sums[w] / nn for k, (v, w) in self._elementwise.items()}
        return n, means, prods, elem

    def moments_about(self, refs: Mapping[str, Tensor]) -> States:
        """The states moved to the references ``{variable: reference}`` (e.g. zeros for raw moments)."""
        states = self._states()
        return self._move(states, {v: refs[v].to(states[r]) for v, (r, _) in self._variables.items()})

    # ------------------------------------------------------------------ merging
    def move_extra_states(self, old: States, new: States, delta: dict[str, Tensor]) -> None:
        """Move the subclass's own reference-dependent states (in ``new``) by ``delta`` (old minus new
        reference per variable), reading the old states from ``old``. Default: nothing to move."""

    def _states(self) -> States:
        return {k: getattr(self, k) for k in self._defaults}

    def _move(self, states: States, refs: dict[str, Tensor]) -> States:
        """``states`` (one process's or batch's) moved to the references ``refs``."""
        n = states["n"]
        delta = {v: states[r] - refs[v] for v, (r, _) in self._variables.items()}
        new = dict(states)
        sums = {v: states[s] for v, (_, s) in self._variables.items()}
        for v, (r, s) in self._variables.items():
            new[r] = refs[v]
            new[s] = sums[v] + n * delta[v]
        for k, (v, w) in self._products.items():
            dv, dw = delta[v], delta[w]
            new[k] = states[k] + torch.outer(sums[v], dw) + torch.outer(dv, sums[w]) + n * torch.outer(dv, dw)
        for k, (v, w) in self._elementwise.items():
            dv, dw = delta[v], delta[w]
            new[k] = states[k] + sums[v] * dw + dv * sums[w] + n * dv * dw
        self.move_extra_states(states, new, delta)
        return new

    def _merge(self, parts: list[States]) -> States:
        """One set of states holding every sample of ``parts``, about the references of the largest part."""
        if not self._variables:
            return {k: sum(p[k] for p in parts) for k in parts[0]}
        counts = torch.stack([p["n"].reshape(()) for p in parts])
        biggest = parts[int(torch.argmax(counts))]
        refs = {v: biggest[r] for v, (r, _) in self._variables.items()}
        moved = [self._move(p, refs) for p in parts]
        variable_of = {r: v for v, (r, _) in self._variables.items()}
        return {k: refs[variable_of[k]] if k in variable_of else sum(m[k] for m in moved) for k in parts[0]}

    def _set_states(self, states: States) -> None:
        for k, v in states.items():
            setattr(self, k, v)

    def _sync_dist(self, dist_sync_fn: Callable | None = gather_all_tensors, process_group: Any | None = None) -> None:
        """Gather the states of every process and merge them about one common reference."""
        if not self._variables:
            return super()._sync_dist(dist_sync_fn or gather_all_tensors, process_group)
        fn = dist_sync_fn or gather_all_tensors
        group = process_group or self.process_group
        gathered = {k: fn(v, group=group) for k, v in self._states().items()}
        world = len(gathered["n"])
        self._set_states(self._merge([{k: g[i] for k, g in gathered.items()} for i in range(world)]))

    def _reduce_states(self, incoming_state: dict[str, Any]) -> None:
        """Merge ``incoming_state`` (e.g. the accumulated states, in ``forward`` or ``merge_state``) into this one."""
        if not self._variables:
            return super()._reduce_states(incoming_state)
        missing = [k for k in self._defaults if k not in incoming_state]
        if missing:
            raise ValueError(f"the incoming state lacks the states {missing} of {type(self).__name__}")
        self._set_states(self._merge([{k: incoming_state[k] for k in self._defaults}, self._states()]))

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args: Any, **kwargs: Any) -> None:
        # raw moments of a checkpoint written before the references existed are moments about 0
        has_moments = any(prefix + s in state_dict for _, s in self._variables.values())
        for _, (r, _) in self._variables.items():
            if has_moments and prefix + r not in state_dict:
                state_dict[prefix + r] = torch.zeros_like(self._defaults[r])
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class CentredR2Score(ShiftedMoments):
    """Coefficient of determination per output, ``1 − Σ(y − ŷ)² / Σ(y − ȳ)²``, streamed about a reference.

    Unlike a raw-moment R² (``Σy² − (Σy)²/n``), the total sum of squares does not lose its digits
    when targets carry a large offset (e.g. ``1e8 + digit``). Exact over batches and DDP processes.
    ``compute()`` returns ``(K,)`` float64 values; an output with constant targets gives NaN.

    Args:
        num_outputs: number of outputs ``K``.
        **kwargs: passed to :class:`torchmetrics.Metric`.

    Example:
        >>> m = CentredR2Score()
        >>> y = 1e8 + torch.arange(10.0, dtype=torch.float64)
        >>> m.update(y + 0.5, y); round(float(m.compute()), 6)
        0.969697
    """

    higher_is_better = True
    sse: Tensor

    def __init__(self, num_outputs: int = 1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not isinstance(num_outputs, int) or isinstance(num_outputs, bool) or num_outputs < 1:
            raise ValueError(f"num_outputs must be a positive int, got {num_outputs!r}")
        self.num_outputs = num_outputs
        self.add_moments(variables={"target": ("sum_target", num_outputs)}, products={},
                         elementwise={"sq_target": ("target", "target")})
        self.add_state("sse", torch.zeros(num_outputs, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, preds: Tensor, target: Tensor) -> None:  # type: ignore[override]
        """Add predictions and targets of shape ``(B,)`` or ``(B, num_outputs)``."""
        preds, target = torch.as_tensor(preds), torch.as_tensor(target)
        if preds.shape != target.shape:
            raise ValueError(f"preds and target must have the same shape, got {tuple(preds.shape)} and "
                             f"{tuple(target.shape)}")
        p = preds.reshape(preds.shape[0], -1).to(self.n.device, torch.float64)
        t = target.reshape(target.shape[0], -1).to(self.n.device, torch.float64)
        if t.shape[1] != self.num_outputs:
            raise ValueError(f"expected {self.num_outputs} outputs, got shape {tuple(target.shape)}")
        self.sse += ((t - p) ** 2).sum(0)
        self.accumulate(target=t)

    def compute(self) -> Tensor:  # type: ignore[override]
        _, _, _, elem = self.centred()
        sst = elem["sq_target"]
        return torch.where(sst > 0, 1 - self.sse / sst.clamp_min(torch.finfo(torch.float64).tiny),
                           torch.full_like(sst, float("nan")))
