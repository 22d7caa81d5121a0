"""Target specs: read ground truth out of any batch.

lit_repr's own DataModules yield dict batches (``{"x": ..., "y": ..., "latents": ...}``); foreign
projects often yield ``(x, y)`` tuples. A *target spec* says where a quantity lives:

- a string: a key of a dict batch (``"y"``, ``"latents"``), or an attribute of an object batch;
- an int: a position in a tuple/list batch (``1`` for the ``y`` of ``(x, y)``);
- a callable: ``fn(batch) -> Tensor`` for anything else.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Union

import torch
from torch import Tensor

__all__ = ["TargetSpec", "get_target", "get_input", "check_target_spec", "check_finite"]

TargetSpec = Union[str, int, Callable[[Any], Any]]


def check_target_spec(spec: Any, name: str = "target") -> TargetSpec:
    """Validate a target spec at construction time; raise ``ValueError`` naming what is allowed.

    Example:
        >>> check_target_spec("latents"), check_target_spec(1)
        ('latents', 1)
        >>> check_target_spec(None, "target_key")
        Traceback (most recent call last):
        ...
        ValueError: target_key must be a dict key (str), a tuple position (int) or a callable ... got None (NoneType)
    """
    if isinstance(spec, bool) or not (isinstance(spec, (str, int)) or callable(spec)):
        raise ValueError(
            f"{name} must be a dict key (str), a tuple position (int) or a callable batch -> tensor, "
            f"got {spec!r} ({type(spec).__name__})"
        )
    return spec


def get_target(batch: Any, spec: TargetSpec, name: str = "target") -> Tensor:
    """Read the quantity named by ``spec`` from ``batch`` as a tensor.

    Args:
        batch: a dict, tuple/list, or object batch.
        spec: a key, position or callable (see module docstring).
        name: what the quantity is called, for error messages.

    Raises:
        KeyError: if a dict batch lacks the key (the message lists the keys it has).
        IndexError: if a tuple batch is too short.

    Example:
        >>> get_target({"x": torch.zeros(2, 3), "y": torch.tensor([0, 1])}, "y")
        tensor([0, 1])
        >>> get_target((torch.zeros(2, 3), torch.tensor([1, 0])), 1)
        tensor([1, 0])
    """
    if callable(spec) and not isinstance(spec, (str, int)):
        value = spec(batch)
    elif isinstance(spec, str):
        if isinstance(batch, Mapping):
            if spec not in batch:
                raise KeyError(
                    f"{name} spec {spec!r} is not a key of the batch; the batch has keys "
                    f"{sorted(map(str, batch.keys()))}"
                )
            value = batch[spec]
        elif hasattr(batch, spec):
            value = getattr(batch, spec)
        else:
            raise KeyError(
                f"{name} spec {spec!r} names a key but the batch is a {type(batch).__name__}, "
                f"not a dict; use an int position (for (x, y) batches: 0 is the input, 1 the label) or a callable"
            )
    elif isinstance(spec, int):
        if not isinstance(batch, (tuple, list)):
            raise KeyError(
                f"{name} spec {spec} is a position but the batch is a {type(batch).__name__}; "
                f"use a key (str) for dict batches"
            )
        if not -len(batch) <= spec < len(batch):
            raise IndexError(f"{name} spec {spec} is out of range for a batch of length {len(batch)}")
        value = batch[spec]
    else:
        check_target_spec(spec, name)
        raise AssertionError("unreachable")
    if not isinstance(value, Tensor):
        value = torch.as_tensor(value)
    return value


def get_input(batch: Any, spec: TargetSpec | None = None) -> Any:
    """The model input of ``batch``: ``batch[spec]``, or by default ``batch["x"]`` for dicts, position 0
    for tuples and lists, the batch itself for a tensor. A callable spec's result is returned as it is:
    a model may take a dict of tensors (``input_key=lambda batch: batch`` feeds it the whole batch).

    Example:
        >>> get_input((torch.ones(2, 3), torch.tensor([1, 0]))).shape
        torch.Size([2, 3])
        >>> get_input({"x": torch.zeros(1, 2), "y": torch.zeros(1)}).shape
        torch.Size([1, 2])
        >>> sorted(get_input({"input_ids": torch.ones(1, 3), "attention_mask": torch.ones(1, 3)}, lambda b: b))
        ['attention_mask', 'input_ids']
    """
    if callable(spec) and not isinstance(spec, (str, int)):
        return spec(batch)
    if spec is None:
        if isinstance(batch, Tensor):
            return batch
        if isinstance(batch, Mapping):
            spec = "x"
        elif isinstance(batch, (tuple, list)):
            spec = 0
        else:
            raise KeyError(
                f"cannot find the input of a {type(batch).__name__} batch: pass input_key (a key, a position or "
                f"a callable batch -> input) or forward_fn"
            )
    return get_target(batch, spec, "input_key")


def check_finite(x: Tensor, what: str) -> Tensor:
    """Raise ``ValueError`` if ``x`` holds NaN or infinity; otherwise return it unchanged.

    Example:
        >>> check_finite(torch.tensor([1.0, float("nan")]), "logits")
        Traceback (most recent call last):
        ...
        ValueError: logits contains 1 non-finite values (NaN or inf) out of 2; ...
    """
    if x.is_floating_point() and not bool(torch.isfinite(x).all()):
        n_bad = int((~torch.isfinite(x)).sum())
        raise ValueError(
            f"{what} contains {n_bad} non-finite values (NaN or inf) out of {x.numel()}; "
            f"check the model for divergence or the data for missing values"
        )
    return x
