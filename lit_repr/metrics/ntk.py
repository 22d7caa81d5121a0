"""The empirical neural tangent kernel and the lazy/rich diagnostics built on it (Kunin et al., NeurIPS 2024).

- :func:`empirical_ntk`: ``K = J Jᵀ`` with ``J`` the Jacobian of the network outputs on a batch of
  inputs with respect to the trainable parameters, computed with ``torch.func`` (per-sample
  ``jacrev`` under ``vmap``, through ``functional_call``) in chunks of samples so that the Jacobian
  alive at once stays under a memory bound (:func:`ntk_chunk_size`), accumulated in float64.
  ``kernel="trace"`` sums over outputs (``N×N``); ``kernel="full"`` keeps them (``(N·K)×(N·K)``,
  sample-major: row ``n·K + k`` is output ``k`` of sample ``n``).
- :func:`kernel_distance`: ``S = 1 − ⟨K₀, K⟩_F / (‖K₀‖_F ‖K‖_F)``, 0 while the kernel keeps its
  direction (lazy training), up to 1 as it rotates (rich, feature learning).
- :func:`activation_hamming`: the fraction of (sample, unit) activation signs that changed.
- :func:`conserved_quantities`: per hidden unit of a two-layer block with first-layer rows ``w_i``
  (bias appended when there is one), second-layer columns ``a_i`` and layer learning rates ``η_w``,
  ``η_a``: ``δ_i = η_w ‖a_i‖² − η_a ‖w_i‖²``. Gradient flow conserves each ``δ_i`` exactly when the
  activation is positively homogeneous (ReLU, linear) and there is no weight decay; ``δ`` sets
  whether the block learns lazily or richly.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.func import functional_call, jacrev, vmap

from lit_repr.features import frozen_mode
from lit_repr.taps import _first_tensor

__all__ = [
    "empirical_ntk", "ntk_chunk_size", "kernel_distance", "param_distance", "activation_hamming",
    "conserved_quantities", "trainable_parameters", "ntk_history_figure", "KernelMode",
]

KernelMode = Literal["trace", "full"]
_MB = 2.0**20


def trainable_parameters(module: nn.Module) -> dict[str, Tensor]:
    """``{name: parameter}`` of the parameters of ``module`` that require gradients.

    Raises:
        ValueError: if there is none (every parameter is frozen, or the module has none).

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 1)); _ = net[0].requires_grad_(False)
        >>> sorted(trainable_parameters(net))
        ['1.bias', '1.weight']
    """
    params = {n: p for n, p in module.named_parameters() if p.requires_grad}
    if not params:
        total = sum(1 for _ in module.parameters())
        raise ValueError(
            f"the neural tangent kernel needs trainable parameters, but {type(module).__name__} has none "
            f"({total} parameter tensors, none with requires_grad=True)"
        )
    return params


def ntk_chunk_size(
    num_samples: int, num_outputs: int, num_params: int, itemsize: int = 4, kernel: KernelMode = "trace",
    max_memory_mb: float = 1024.0, num_kernels: int = 1,
) -> int:
    """How many samples' Jacobians :func:`empirical_ntk` computes at once within ``max_memory_mb``.

    The budget holds ``num_kernels`` float64 kernels plus the Jacobian alive at once: one chunk
    when the whole batch fits, else two chunks (a block ``J_i J_jᵀ`` of the kernel needs both). A
    sample's Jacobian takes ``num_outputs · num_params`` numbers of ``itemsize`` bytes, plus their
    float64 copy when ``itemsize != 8``.

    Raises:
        ValueError: if not even one sample's Jacobian fits beside the kernels; the message names the sizes.

    Example:
        >>> ntk_chunk_size(64, 10, 1000, max_memory_mb=1.0)
        4
        >>> ntk_chunk_size(64, 10, 1000, max_memory_mb=100.0)
        64
    """
    if kernel not in ("trace", "full"):
        raise ValueError(f"kernel must be 'trace' or 'full', got {kernel!r}")
    side = num_samples * (num_outputs if kernel == "full" else 1)
    kernel_bytes = num_kernels * side * side * 8
    per_sample = num_outputs * num_params * (itemsize + (0 if itemsize == 8 else 8))
    avail = max_memory_mb * _MB - kernel_bytes
    if num_samples * per_sample <= avail:
        return num_samples
    chunk = int(avail // (2 * per_sample)) if avail > 0 else 0
    if chunk < 1:
        need = (kernel_bytes + 2 * per_sample) / _MB
        raise ValueError(
            f"max_memory_mb={max_memory_mb} cannot hold the neural tangent kernel of {num_samples} samples x "
            f"{num_outputs} outputs x {num_params} parameters: {num_kernels} float64 {side}x{side} kernel(s) take "
            f"{kernel_bytes / _MB:.1f} MB and one sample's Jacobian {per_sample / _MB:.1f} MB (two are alive at "
            f"once); allowed: max_memory_mb >= {math.ceil(need * 10) / 10}, or fewer samples (num_samples)"
            + (", or kernel='trace'" if kernel == "full" else "")
        )
    return chunk


def _output_fn(output_fn: Callable[[Any], Tensor] | None) -> Callable[[Any], Tensor]:
    return output_fn if output_fn is not None else _first_tensor


def empirical_ntk(
    module: nn.Module,
    inputs: Tensor,
    params: Sequence[str] | None = None,
    state: Mapping[str, Tensor] | None = None,
    output_fn: Callable[[Any], Tensor] | None = None,
    kernel: KernelMode = "trace",
    max_memory_mb: float = 1024.0,
) -> Tensor:
    """The empirical NTK of ``module`` on ``inputs``: ``J Jᵀ`` in float64, ``J`` computed in chunks of samples.

    The module runs in eval mode (each submodule's mode restored after); its parameters' ``.grad``
    fields are untouched: the Jacobian comes from ``torch.func`` on detached values.

    Args:
        module: any ``nn.Module`` called as ``module(x)`` on a batch ``x``.
        inputs: a batch of inputs, samples along dimension 0.
        params: names of the parameters to differentiate (default: those with ``requires_grad``).
        state: values for the module's parameters and buffers, by name (default: the module's own);
            names missing here keep the module's own values.
        output_fn: picks the network output out of ``module(x)`` (default: ``module(x)`` if it is a
            tensor, else its first tensor); each sample's output is flattened to ``K`` numbers.
        kernel: ``"trace"`` (``N×N``, summed over outputs) or ``"full"`` (``(N·K)×(N·K)``, sample-major).
        max_memory_mb: bound on the kernel plus the Jacobian alive at once (see :func:`ntk_chunk_size`).

    Example:
        For a linear model ``f(x) = Wx + b`` with one output the NTK is ``x·x' + 1``:

        >>> net = nn.Linear(3, 1).double()
        >>> x = torch.randn(5, 3, dtype=torch.float64)
        >>> torch.allclose(empirical_ntk(net, x), x @ x.T + 1)
        True
    """
    if not isinstance(inputs, Tensor) or inputs.ndim < 1 or inputs.shape[0] < 1:
        raise ValueError(f"inputs must be a tensor with samples along dimension 0, got {type(inputs).__name__}")
    values = {**dict(module.named_parameters()), **dict(module.named_buffers()), **(state or {})}
    names = list(params) if params is not None else list(trainable_parameters(module))
    missing = [n for n in names if n not in values]
    if not names or missing:
        raise ValueError(f"params must name parameters of {type(module).__name__}; unknown: {missing or names}")
    diff = {n: values[n].detach() for n in names}
    const = {n: v.detach() for n, v in values.items() if n not in diff}
    pick = _output_fn(output_fn)

    def single(p: dict[str, Tensor], x: Tensor) -> Tensor:
        return pick(functional_call(module, {**const, **p}, (x.unsqueeze(0),))).reshape(-1)

    jac = vmap(jacrev(single), in_dims=(None, 0))
    n = inputs.shape[0]
    with frozen_mode(module), torch.inference_mode(False):
        k = int(single(diff, inputs[0]).numel())
        num_p = sum(v.numel() for v in diff.values())
        itemsize = max(v.element_size() for v in diff.values())
        chunk = ntk_chunk_size(n, k, num_p, itemsize, kernel, max_memory_mb)
        side = n * k if kernel == "full" else n
        out = torch.zeros(side, side, dtype=torch.float64, device=inputs.device)
        bounds = [(s, min(s + chunk, n)) for s in range(0, n, chunk)]
        rows = k if kernel == "full" else 1

        def block(ja: dict[str, Tensor], jb: dict[str, Tensor]) -> Tensor:
            acc = None
            for name in names:
                a, b = ja[name], jb[name]
                a = a.reshape(a.shape[0] * rows, -1).double()
                b = b.reshape(b.shape[0] * rows, -1).double()
                acc = a @ b.T if acc is None else acc + a @ b.T
            return acc

        for i, (s0, e0) in enumerate(bounds):
            ja = jac(diff, inputs[s0:e0])
            out[s0 * rows : e0 * rows, s0 * rows : e0 * rows] = block(ja, ja)
            for s1, e1 in bounds[i + 1 :]:
                jb = jac(diff, inputs[s1:e1])
                kab = block(ja, jb)
                out[s0 * rows : e0 * rows, s1 * rows : e1 * rows] = kab
                out[s1 * rows : e1 * rows, s0 * rows : e0 * rows] = kab.T
                del jb
            del ja
    return out


def kernel_distance(k0: Tensor, k: Tensor) -> float:
    """``1 − ⟨K₀, K⟩_F / (‖K₀‖_F ‖K‖_F)`` in float64; NaN when a kernel is zero.

    Example:
        >>> k = torch.eye(3, dtype=torch.float64)
        >>> kernel_distance(k, 5 * k), round(kernel_distance(k, torch.ones(3, 3)), 4)
        (0.0, 0.4226)
    """
    if k0.shape != k.shape:
        raise ValueError(f"kernels must have one shape, got {tuple(k0.shape)} and {tuple(k.shape)}")
    a, b = k0.double(), k.double()
    denom = float(a.norm()) * float(b.norm())
    return float("nan") if denom == 0 else 1.0 - float((a * b).sum()) / denom


def param_distance(theta0: Mapping[str, Tensor], theta: Mapping[str, Tensor]) -> float:
    """``‖θ − θ₀‖ / ‖θ₀‖`` over the named tensors of ``theta0`` (``‖θ − θ₀‖`` when ``θ₀ = 0``).

    Example:
        >>> param_distance({"w": torch.ones(4)}, {"w": torch.full((4,), 1.5)})
        0.5
    """
    diff = sum(float((theta[n].detach().double() - t0.detach().to(theta[n].device).double()).pow(2).sum())
               for n, t0 in theta0.items())
    norm = sum(float(t0.detach().double().pow(2).sum()) for t0 in theta0.values())
    return math.sqrt(diff / norm) if norm > 0 else math.sqrt(diff)


def activation_hamming(pattern0: Tensor, pattern: Tensor) -> float:
    """The fraction of entries of two boolean activation patterns (``(N, units)``: ``output > 0``) that differ.

    Example:
        >>> activation_hamming(torch.tensor([[True, False]]), torch.tensor([[True, True]]))
        0.5
    """
    if pattern0.shape != pattern.shape:
        raise ValueError(f"activation patterns must have one shape, got {tuple(pattern0.shape)} and "
                         f"{tuple(pattern.shape)}")
    return float((pattern0 != pattern.to(pattern0.device)).double().mean())


def conserved_quantities(
    first: Tensor, second: Tensor, first_bias: Tensor | None = None, lr_first: float = 1.0, lr_second: float = 1.0
) -> Tensor:
    """``δ_i = η_w ‖a_i‖² − η_a ‖w_i‖²`` per hidden unit of a two-layer block, in float64.

    Args:
        first: first-layer weight ``W1`` of shape ``(h, d)``; row ``i`` is ``w_i``.
        second: second-layer weight ``W2`` of shape ``(k, h)``; column ``i`` is ``a_i``.
        first_bias: first-layer bias ``(h,)``, appended to ``w_i`` (the law holds for the augmented rows).
        lr_first: ``η_w``, the learning rate of the first layer.
        lr_second: ``η_a``, the learning rate of the second layer.

    Example:
        >>> conserved_quantities(torch.ones(2, 3), torch.full((1, 2), 2.0), lr_first=1.0, lr_second=0.5)
        tensor([2.5000, 2.5000], dtype=torch.float64)
    """
    if first.ndim != 2 or second.ndim != 2 or second.shape[1] != first.shape[0]:
        raise ValueError(
            f"a two-layer block needs W1 of shape (h, d) and W2 of shape (k, h), got {tuple(first.shape)} and "
            f"{tuple(second.shape)}"
        )
    w_sq = first.detach().double().pow(2).sum(1)
    if first_bias is not None:
        w_sq = w_sq + first_bias.detach().double().pow(2)
    a_sq = second.detach().double().pow(2).sum(0)
    return lr_first * a_sq - lr_second * w_sq


def ntk_history_figure(history: Mapping[str, Sequence[float]], name: str = "ntk") -> Any:
    """Figure of lazy/rich diagnostics over training, from ``{"step": [...], "<name>/<quantity>": [...]}``.

    Panels: kernel distance; parameter distance; activation Hamming distance per ReLU site; mean
    and largest ``|δ|`` and largest change of ``δ`` per two-layer block.

    Example:
        >>> fig = ntk_history_figure({"step": [0, 10], "ntk/kernel_distance": [0.0, 0.2],
        ...                           "ntk/param_distance": [0.0, 0.5]})
        >>> len(fig.axes)
        2
    """
    from lit_repr.metrics.figures import _pyplot

    plt = _pyplot()
    steps = list(history.get("step", []))
    groups: list[tuple[str, list[str]]] = [
        ("kernel distance S(t) = 1 − cos(K₀, K_t)", [t for t in (f"{name}/kernel_distance",) if t in history]),
        ("parameter distance ‖θ_t − θ₀‖ / ‖θ₀‖", [t for t in (f"{name}/param_distance",) if t in history]),
        ("activation signs changed since init", [t for t in history if t.endswith("/activation_hamming")]),
        ("conserved quantities δ per block", [t for t in history if "/delta_" in t]),
    ]
    groups = [(title, tags) for title, tags in groups if tags]
    fig, axes = plt.subplots(1, max(1, len(groups)), figsize=(4.2 * max(1, len(groups)), 3.3), squeeze=False)
    for ax, (title, tags) in zip(axes[0], groups):
        for tag in tags:
            ax.plot(steps, list(history[tag]), marker="o", ms=2.5, lw=1.2, label=tag[len(name) + 1 :])
        ax.set_xlabel("step")
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig
