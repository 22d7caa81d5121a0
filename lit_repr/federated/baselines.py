"""Federated baselines: FedAvg (McMahan et al. 2017), FedProx (Li et al. 2020) and centralized training.

Each client trains a copy of the global :class:`~lit_repr.models.Classifier` on its own shard for a
few local epochs through a Lightning ``Trainer``; the server replaces the global weights (and
buffers, e.g. BatchNorm running statistics) by the average of the clients' weights, weighted by the
clients' sample counts. FedProx adds ``(mu / 2) * ||w - w_global||^2`` to each client's loss
(:class:`ProximalTerm`), which keeps the clients near the global model when their data differ.
:func:`centralized` is the reference every federated method is measured against: one model trained
on the union of the clients' data.

Every run is deterministic for a fixed ``seed``: the initial model is drawn from ``seed`` and the
local run of client ``c`` in round ``r`` (its shuffling and dropout) from ``(seed, r, c)``; the
caller's random states are left untouched.

Measured on scikit-learn's digits (1,257 training / 540 test images, MLP 64-64-10, AdamW lr 1e-2,
5 rounds of 2 local epochs; test accuracy, mean over seeds 0-2; ``pytest -m slow``
``tests/federated/test_baselines.py``): centralized 0.959; FedAvg on an IID split of 5 clients
0.923; with 2 classes per client 0.347 (FedProx ``mu=0.1``: 0.519); with one class per client (10
silos) 0.097, chance level (FedProx ``mu=0.1``: 0.158). Averaging models trained on disjoint label
sets collapses.

Example:
    >>> import numpy as np
    >>> x, y = torch.rand(40, 8), torch.arange(40) % 2
    >>> shards = (np.arange(0, 40, 2), np.arange(1, 40, 2))  # one class per client
    >>> model = fedavg(x, y, shards, rounds=2, local_epochs=1, seed=0,
    ...                classifier={"num_classes": 2, "in_features": 8, "hidden": [4]})
    >>> model(x).shape
    torch.Size([40, 2])
"""

from __future__ import annotations

import copy
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler
from typing_extensions import override

from lit_repr.checks import check_bool, check_int, check_number
from lit_repr.features import preserved_rng
from lit_repr.federated.engine import QUIET_TRAINER, quiet_lightning
from lit_repr.models.classifier import Classifier

__all__ = [
    "ProximalTerm",
    "average_states",
    "local_update",
    "fedavg",
    "fedprox",
    "centralized",
    "accuracy",
    "derive_seed",
    "parameter_distance",
]

#: Trainer settings the baselines set themselves (``trainer_kwargs`` may not override them).
_RESERVED_TRAINER_KEYS = ("max_epochs", "min_epochs", "max_steps", "min_steps", "max_time", "logger")


class ProximalTerm(Callback):
    """FedProx's proximal term ``(mu / 2) * ||w - w_ref||^2`` added to the training loss.

    The reference weights ``w_ref`` are the module's trainable parameters when fitting starts (the
    global model a client received). The term is added through its gradient,
    ``mu * (w - w_ref)``, accumulated into every parameter's ``.grad`` right after the loss's
    backward pass (divided by ``accumulate_grad_batches`` like the loss itself), so gradient
    clipping and the optimizer see exactly the gradient of the proximal loss, and the module's own
    ``training_step`` is left as it is. With ``mu = 0`` training is bit for bit unchanged.

    After fitting, :attr:`drift` holds ``||w - w_ref||`` (over all trainable parameters).

    Args:
        mu: proximal strength, ``>= 0``.

    Example:
        >>> model = Classifier(num_classes=2, in_features=4, hidden=[3])
        >>> prox = ProximalTerm(mu=0.1)
        >>> x, y = torch.randn(16, 4), torch.arange(16) % 2
        >>> data = DataLoader([{"x": a, "y": b} for a, b in zip(x, y)], batch_size=8)
        >>> trainer = pl.Trainer(max_epochs=1, callbacks=[prox], logger=False, enable_progress_bar=False,
        ...                      enable_checkpointing=False, enable_model_summary=False)
        >>> trainer.fit(model, data)
        >>> prox.drift > 0
        True
    """

    def __init__(self, mu: float) -> None:
        super().__init__()
        self.mu = check_number("mu", mu, low=0)
        self.reference: dict[str, Tensor] = {}
        self.drift: float = 0.0

    @override
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.reference = {n: p.detach().clone() for n, p in pl_module.named_parameters() if p.requires_grad}
        self.drift = 0.0

    @override
    def on_after_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.mu:
            return
        scale = self.mu / max(int(trainer.accumulate_grad_batches), 1)
        for name, p in pl_module.named_parameters():
            ref = self.reference.get(name)
            if ref is None or not p.requires_grad:
                continue
            step = (p.detach() - ref).mul_(scale)
            if p.grad is None:
                p.grad = step
            else:
                p.grad.add_(step)

    @override
    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.drift = parameter_distance(pl_module, self.reference)


def parameter_distance(module: torch.nn.Module, reference: Mapping[str, Tensor]) -> float:
    """``||w - w_ref||`` over the module's parameters named in ``reference``.

    Example:
        >>> lin = torch.nn.Linear(2, 1)
        >>> ref = {n: p.detach() + 1 for n, p in lin.named_parameters()}
        >>> round(parameter_distance(lin, ref), 4)  # three parameters, each 1 away
        1.7321
    """
    total = 0.0
    for name, p in module.named_parameters():
        if name in reference:
            total += float((p.detach().double() - reference[name].double()).pow(2).sum())
    return total**0.5


def average_states(states: Sequence[Mapping[str, Tensor]], weights: Sequence[float]) -> dict[str, Tensor]:
    """The weighted average of several ``state_dict``s, as FedAvg's server computes it.

    Weights are normalised to sum to one (pass the clients' sample counts). Floating tensors are
    averaged in float64 and cast back to their dtype; integer tensors (e.g. BatchNorm's
    ``num_batches_tracked``) get the rounded weighted average in their own dtype; boolean tensors
    must agree across states.

    Args:
        states: one ``state_dict`` per client, all with the same keys, shapes and dtypes.
        weights: one non-negative weight per state, not all zero.

    Returns:
        A new ``state_dict`` (fresh CPU tensors) with the keys of ``states[0]``.

    Example:
        >>> a, b = {"w": torch.tensor([0.0, 4.0])}, {"w": torch.tensor([4.0, 0.0])}
        >>> average_states([a, b], [3, 1])["w"]
        tensor([1., 3.])
    """
    if isinstance(states, Mapping) or not isinstance(states, Sequence) or not states:
        raise ValueError(f"states must be a non-empty sequence of state_dicts, got {type(states).__name__}")
    if isinstance(weights, (str, bytes)) or not isinstance(weights, Sequence) or len(weights) != len(states):
        raise ValueError(f"weights must be a sequence with one weight per state ({len(states)}), got {weights!r}")
    w = np.array([check_number(f"weights[{i}]", v, low=0) for i, v in enumerate(weights)], dtype=np.float64)
    if w.sum() <= 0:
        raise ValueError(f"weights must not all be zero, got {list(weights)}")
    w = w / w.sum()
    first = states[0]
    for i, s in enumerate(states):
        if not isinstance(s, Mapping):
            raise ValueError(f"states[{i}] must be a state_dict (names to tensors), got {type(s).__name__}")
        if set(s) != set(first):
            missing, extra = sorted(set(first) - set(s)), sorted(set(s) - set(first))
            raise ValueError(f"states[{i}] has different keys from states[0]: missing {missing}, extra {extra}")
        for k, v in s.items():
            ref = first[k]
            if not isinstance(v, Tensor) or v.shape != ref.shape or v.dtype != ref.dtype:
                got = f"{tuple(v.shape)} {v.dtype}" if isinstance(v, Tensor) else type(v).__name__
                raise ValueError(
                    f"states[{i}][{k!r}] must be a tensor of shape {tuple(ref.shape)} and dtype {ref.dtype} "
                    f"like states[0], got {got}"
                )
    out: dict[str, Tensor] = {}
    for k, ref in first.items():
        if ref.dtype == torch.bool:
            if any(not torch.equal(s[k], ref) for s in states[1:]):
                raise ValueError(f"boolean entry {k!r} differs between states and cannot be averaged")
            out[k] = ref.detach().cpu().clone()
            continue
        acc = torch.zeros(ref.shape, dtype=torch.complex128 if ref.is_complex() else torch.float64)
        for s, wi in zip(states, w):
            if wi:
                acc += s[k].detach().cpu().to(acc.dtype) * float(wi)
        if ref.is_floating_point() or ref.is_complex():
            out[k] = acc.to(ref.dtype)
        else:
            out[k] = acc.round().to(ref.dtype)
    return out


# ----------------------------------------------------------------------------------- data and checks
class _ArrayBatches(Dataset):
    """Whole batches of two aligned tensors, fetched by a list of indices (one slice per batch)."""

    def __init__(self, x: Tensor, y: Tensor, input_key: str, target_key: str) -> None:
        self.x, self.y, self.input_key, self.target_key = x, y, input_key, target_key

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, idx: list[int]) -> dict[str, Tensor]:
        i = torch.as_tensor(idx, dtype=torch.long)
        return {self.input_key: self.x[i], self.target_key: self.y[i]}


def _loader(x: Tensor, y: Tensor, model: Classifier, batch_size: int, seed: int) -> DataLoader:
    data = _ArrayBatches(x, y, model.input_key, model.target_key)
    sampler = RandomSampler(data, generator=torch.Generator().manual_seed(seed))
    return DataLoader(data, sampler=BatchSampler(sampler, batch_size, drop_last=False), batch_size=None)


def _check_data(images: Any, labels: Any, name: str = "images") -> tuple[Tensor, Tensor]:
    if not isinstance(images, Tensor) or images.ndim < 2 or not images.is_floating_point():
        got = f"{images.dtype} of shape {tuple(images.shape)}" if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"{name} must be a float tensor of shape (N, ...) with N samples, got {got}")
    if isinstance(labels, np.ndarray):
        labels = torch.from_numpy(labels)
    label_name = "labels" if name == "images" else f"{name} labels"
    if not isinstance(labels, Tensor) or labels.ndim != 1 or labels.is_floating_point() or labels.dtype == torch.bool:
        got = f"{labels.dtype} of shape {tuple(labels.shape)}" if isinstance(labels, Tensor) else type(labels).__name__
        raise ValueError(f"{label_name} must be a 1-D integer tensor of class indices, got {got}")
    if len(labels) != len(images):
        raise ValueError(f"{name} and {label_name} must have the same length, got {len(images)} and {len(labels)}")
    if len(labels) == 0:
        raise ValueError(f"{name} must hold at least one sample, got none")
    if not torch.isfinite(images).all():
        raise ValueError(f"{name} must be finite, got NaN or infinite values")
    return images.detach().cpu(), labels.detach().cpu().long()


def _check_labels_fit(labels: Tensor, model: Classifier, name: str = "labels") -> None:
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0 or hi >= model.num_classes:
        raise ValueError(
            f"{name} must be class indices in [0, {model.num_classes}) (classifier num_classes={model.num_classes}), "
            f"got values in [{lo}, {hi}]"
        )


def _client_indices(partition: Any, num_samples: int) -> tuple[np.ndarray, ...]:
    """The clients' index arrays of a ``Partition`` (or a plain sequence of index arrays), checked to
    be disjoint and to cover the ``num_samples`` samples exactly."""
    shards = getattr(partition, "indices", partition)
    if isinstance(shards, (str, bytes, Mapping, Tensor, np.ndarray)) or not isinstance(shards, Sequence) or not shards:
        raise ValueError(
            "partition must be a Partition or a non-empty sequence of per-client index arrays, "
            f"got {type(partition).__name__}"
        )
    out = []
    seen = np.zeros(num_samples, dtype=np.int64)
    for c, idx in enumerate(shards):
        arr = np.asarray(idx.cpu() if isinstance(idx, Tensor) else idx)
        if arr.ndim != 1 or (arr.size and not np.issubdtype(arr.dtype, np.integer)):
            raise ValueError(
                f"partition client {c} must be a 1-D array of integer sample indices, got {arr.dtype} "
                f"of shape {arr.shape}"
            )
        arr = arr.astype(np.int64)
        if arr.size and (arr.min() < 0 or arr.max() >= num_samples):
            raise ValueError(
                f"partition client {c} has indices outside [0, {num_samples}) (the number of samples), "
                f"got values in [{arr.min()}, {arr.max()}]"
            )
        np.add.at(seen, arr, 1)
        out.append(arr)
    if (seen > 1).any():
        raise ValueError(
            f"partition clients must be disjoint, but {int((seen > 1).sum())} samples belong to several clients "
            f"(e.g. sample {int(np.flatnonzero(seen > 1)[0])})"
        )
    if (seen == 0).any():
        raise ValueError(
            f"partition must cover the data: {int((seen == 0).sum())} of {num_samples} samples belong to no client "
            f"(e.g. sample {int(np.flatnonzero(seen == 0)[0])})"
        )
    return tuple(out)


def _check_classifier(classifier: Any, lr: float | None) -> dict[str, Any]:
    if not isinstance(classifier, Mapping):
        raise ValueError(
            "classifier must be a dict of Classifier keyword arguments (e.g. {'num_classes': 10, 'in_features': 64}), "
            f"got {type(classifier).__name__}"
        )
    kwargs = dict(classifier)
    if kwargs.get("task", "multiclass") != "multiclass":
        raise ValueError(f"classifier task must be 'multiclass' for the federated baselines, got {kwargs['task']!r}")
    for key in ("input_key", "target_key"):
        if key in kwargs and not isinstance(kwargs[key], str):
            raise ValueError(f"classifier {key} must be a string key (batches are dicts), got {kwargs[key]!r}")
    if lr is not None:
        check_number("lr", lr, low=0, low_open=True)
        if "lr" in kwargs and kwargs["lr"] != lr:
            raise ValueError(f"lr is given twice with different values: lr={lr} and classifier['lr']={kwargs['lr']}")
        kwargs["lr"] = lr
    return kwargs


def _check_trainer_kwargs(trainer_kwargs: Any) -> dict[str, Any]:
    if trainer_kwargs is None:
        return {}
    if not isinstance(trainer_kwargs, Mapping):
        raise ValueError(f"trainer_kwargs must be a dict of Trainer arguments, got {type(trainer_kwargs).__name__}")
    reserved = sorted(set(trainer_kwargs) & set(_RESERVED_TRAINER_KEYS))
    if reserved:
        raise ValueError(
            f"trainer_kwargs may not set {reserved}: the number of epochs is an argument of its own and the "
            "logger is the `logger` argument"
        )
    return dict(trainer_kwargs)


def _build_model(kwargs: dict[str, Any], seed: int, example: Tensor) -> Classifier:
    with preserved_rng():
        torch.manual_seed(seed)
        model = Classifier(**kwargs)
    model.train()
    with torch.no_grad(), preserved_rng():
        try:
            out = model.eval()(example[:2])
        except RuntimeError as err:
            raise ValueError(
                f"images of shape {tuple(example.shape[1:])} per sample do not fit the classifier "
                f"(backbone={kwargs.get('backbone', 'mlp')!r}, in_features={model.hparams.in_features}): {err}"
            ) from err
        finally:
            model.train()
    if out.shape != (min(2, len(example)), model.num_classes):
        raise ValueError(f"the classifier maps images to shape {tuple(out.shape)}, expected (N, {model.num_classes})")
    return model


def derive_seed(seed: int, *keys: int) -> int:
    """A 31-bit seed drawn deterministically from ``seed`` and ``keys`` (e.g. round and client).

    Example:
        >>> derive_seed(0, 1, 2) == derive_seed(0, 1, 2) != derive_seed(0, 2, 1)
        True
    """
    return int(np.random.SeedSequence([int(seed), *map(int, keys)]).generate_state(1)[0] & 0x7FFFFFFF)


def _check_seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    return int(seed)


# ----------------------------------------------------------------------------------- training
def local_update(
    model: Classifier,
    images: Tensor,
    labels: Tensor,
    *,
    epochs: int,
    seed: int,
    mu: float = 0.0,
    batch_size: int = 64,
    progress: bool = False,
    logger: Any = None,
    trainer_kwargs: dict[str, Any] | None = None,
) -> dict[str, float]:
    """Train ``model`` in place on one client's data for ``epochs`` epochs through a Lightning ``Trainer``.

    The client's shuffling and any dropout are drawn from ``seed``; the caller's random states are
    left as they were. No checkpoint is written. With ``mu > 0`` the loss carries FedProx's
    proximal term towards the weights ``model`` had on entry (:class:`ProximalTerm`).

    Args:
        model: the classifier to train (the client's copy of the global model).
        images: the client's inputs, ``(N, ...)`` float.
        labels: the client's class indices, ``(N,)``.
        epochs: local epochs, ``>= 1``.
        seed: seed of the local run.
        mu: proximal strength, ``>= 0`` (``0``: plain local training, as in FedAvg).
        batch_size: samples per batch.
        progress: show Lightning's progress bar.
        logger: a Lightning logger for this run (``None``: none).
        trainer_kwargs: further ``Trainer`` arguments (not the epoch counts nor the logger).

    Returns:
        ``{"drift": ||w_after - w_before||, "num_samples": N, "train/loss": ..., "train/acc": ...}``
        (the last two as Lightning last reported them).

    Example:
        >>> model = Classifier(num_classes=2, in_features=4, hidden=[3])
        >>> stats = local_update(model, torch.randn(20, 4), torch.arange(20) % 2, epochs=1, seed=0)
        >>> sorted(stats)
        ['drift', 'num_samples', 'train/acc', 'train/loss']
    """
    if not isinstance(model, Classifier):
        raise ValueError(f"model must be a lit_repr Classifier, got {type(model).__name__}")
    images, labels = _check_data(images, labels)
    _check_labels_fit(labels, model)
    epochs = check_int("epochs", epochs)
    seed = _check_seed(seed)
    mu = check_number("mu", mu, low=0)
    batch_size = check_int("batch_size", batch_size)
    progress = check_bool("progress", progress)
    extra = _check_trainer_kwargs(trainer_kwargs)
    if not isinstance(model.input_key, str) or not isinstance(model.target_key, str):
        raise ValueError(
            f"model input_key and target_key must be string keys (batches are dicts), got "
            f"{model.input_key!r} and {model.target_key!r}"
        )
    prox = ProximalTerm(mu)
    kwargs: dict[str, Any] = {**QUIET_TRAINER, "enable_progress_bar": progress, "log_every_n_steps": 1}
    kwargs.update(extra)
    kwargs["callbacks"] = [prox, *list(extra.get("callbacks") or [])]
    kwargs.update(max_epochs=epochs, logger=logger if logger is not None else False)
    with preserved_rng(), quiet_lightning(banners=not progress):
        torch.manual_seed(seed)
        trainer = pl.Trainer(**kwargs)
        trainer.fit(model, train_dataloaders=_loader(images, labels, model, batch_size, seed))
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k in ("train/loss", "train/acc")}
    return {"drift": prox.drift, "num_samples": float(len(labels)), **metrics}


def fedavg(
    images: Tensor,
    labels: Tensor,
    partition: Any,
    *,
    rounds: int,
    local_epochs: int,
    classifier: dict[str, Any],
    seed: int,
    mu: float = 0.0,
    batch_size: int = 64,
    lr: float | None = None,
    progress: bool = False,
    logger: Any = None,
    val: tuple[Tensor, Tensor] | None = None,
    trainer_kwargs: dict[str, Any] | None = None,
) -> Classifier:
    """Federated averaging (McMahan et al. 2017); with ``mu > 0``, FedProx (Li et al. 2020).

    In each round every client with data trains a copy of the global model for ``local_epochs``
    epochs on its shard (:func:`local_update`), then the global weights and buffers become the
    average of the clients' ones weighted by their sample counts (:func:`average_states`).

    Args:
        images: training inputs of all clients, ``(N, ...)`` float.
        labels: training class indices, ``(N,)``.
        partition: a :class:`~lit_repr.federated.partition.Partition` or a sequence of per-client
            index arrays into ``images``; clients must be disjoint and together hold every sample.
        rounds: communication rounds, ``>= 1``.
        local_epochs: epochs each client trains per round, ``>= 1``.
        classifier: keyword arguments of :class:`~lit_repr.models.Classifier` (multiclass).
        seed: seed of the initial model and of every local run.
        mu: FedProx proximal strength, ``>= 0`` (``0``: FedAvg).
        batch_size: samples per local batch.
        lr: learning rate of the local optimizer (``None``: the classifier's ``lr``).
        progress: show Lightning's progress bars.
        logger: a Lightning logger; gets per-round ``<method>/train_loss``, ``<method>/train_acc``,
            ``<method>/drift`` (mean ``||w_client - w_global||``) and, with ``val``, ``<method>/val_acc``,
            where ``<method>`` is ``fedavg`` or ``fedprox``.
        val: optional ``(images, labels)`` evaluated after every round (for the logger).
        trainer_kwargs: further ``Trainer`` arguments of the local runs.

    Returns:
        The global :class:`~lit_repr.models.Classifier` after the last round, in eval mode.
    """
    images, labels = _check_data(images, labels)
    shards = _client_indices(partition, len(labels))
    rounds = check_int("rounds", rounds)
    local_epochs = check_int("local_epochs", local_epochs)
    seed = _check_seed(seed)
    mu = check_number("mu", mu, low=0)
    batch_size = check_int("batch_size", batch_size)
    progress = check_bool("progress", progress)
    extra = _check_trainer_kwargs(trainer_kwargs)
    kwargs = _check_classifier(classifier, lr)
    if val is not None:
        if not isinstance(val, (tuple, list)) or len(val) != 2:
            raise ValueError(f"val must be None or a pair (images, labels), got {type(val).__name__}")
        val = _check_data(*val, name="val images")
    model = _build_model(kwargs, seed, images)
    _check_labels_fit(labels, model)
    if val is not None:
        _check_labels_fit(val[1], model, "val labels")
    num_classes = getattr(partition, "num_classes", None)
    if num_classes is not None and num_classes > model.num_classes:
        raise ValueError(
            f"the partition has {num_classes} classes but the classifier only {model.num_classes} (num_classes)"
        )
    method = "fedprox" if mu > 0 else "fedavg"
    if logger is not None:
        logger.log_hyperparams(
            {
                "method": method,
                "rounds": rounds,
                "local_epochs": local_epochs,
                "mu": mu,
                "batch_size": batch_size,
                "seed": seed,
                "num_clients": len(shards),
                **{f"classifier/{k}": v for k, v in kwargs.items()},
            }
        )
    for r in range(rounds):
        states, counts, stats = [], [], []
        for c, idx in enumerate(shards):
            if not len(idx):
                continue
            local = copy.deepcopy(model)
            stats.append(
                local_update(
                    local,
                    images[idx],
                    labels[idx],
                    epochs=local_epochs,
                    seed=derive_seed(seed, r, c),
                    mu=mu,
                    batch_size=batch_size,
                    progress=progress,
                    trainer_kwargs=extra,
                )
            )
            states.append(local.state_dict())
            counts.append(len(idx))
        model.load_state_dict(average_states(states, counts))
        if logger is not None:
            total = float(sum(counts))
            row = {
                f"{method}/{name}": sum(s[key] * n for s, n in zip(stats, counts)) / total
                for name, key in (("train_loss", "train/loss"), ("train_acc", "train/acc"))
                if all(key in s for s in stats)
            }
            row[f"{method}/drift"] = float(np.mean([s["drift"] for s in stats]))
            if val is not None:
                row[f"{method}/val_acc"] = accuracy(model, *val, batch_size=max(batch_size, 256))
            logger.log_metrics(row, step=r)
    if logger is not None:
        logger.save()
    return model.eval()


def fedprox(
    images: Tensor,
    labels: Tensor,
    partition: Any,
    *,
    rounds: int,
    local_epochs: int,
    classifier: dict[str, Any],
    seed: int,
    mu: float = 0.01,
    **kwargs: Any,
) -> Classifier:
    """FedProx (Li et al. 2020): :func:`fedavg` with the proximal term ``(mu / 2) ||w - w_global||^2``.

    Args:
        images: training inputs, ``(N, ...)`` float.
        labels: training class indices, ``(N,)``.
        partition: per-client index arrays (see :func:`fedavg`).
        rounds: communication rounds.
        local_epochs: epochs each client trains per round.
        classifier: keyword arguments of :class:`~lit_repr.models.Classifier`.
        seed: seed of the run.
        mu: proximal strength, ``>= 0`` (default ``0.01``).
        **kwargs: the other arguments of :func:`fedavg`.
    """
    return fedavg(
        images,
        labels,
        partition,
        rounds=rounds,
        local_epochs=local_epochs,
        classifier=classifier,
        seed=seed,
        mu=mu,
        **kwargs,
    )


def centralized(
    images: Tensor,
    labels: Tensor,
    *,
    epochs: int,
    classifier: dict[str, Any],
    seed: int,
    batch_size: int = 64,
    lr: float | None = None,
    progress: bool = False,
    logger: Any = None,
    trainer_kwargs: dict[str, Any] | None = None,
) -> Classifier:
    """The centralized reference: one classifier trained on all the data, as if a single client held it.

    Identical, bit for bit, to :func:`fedavg` with one client holding everything and ``rounds=1``,
    ``local_epochs=epochs`` (same initial model, same local seed).

    Args:
        images: training inputs, ``(N, ...)`` float.
        labels: training class indices, ``(N,)``.
        epochs: training epochs, ``>= 1``.
        classifier: keyword arguments of :class:`~lit_repr.models.Classifier` (multiclass).
        seed: seed of the initial model and of the run.
        batch_size: samples per batch.
        lr: learning rate (``None``: the classifier's ``lr``).
        progress: show Lightning's progress bar.
        logger: a Lightning logger for the run (it gets the classifier's ``train/...`` metrics).
        trainer_kwargs: further ``Trainer`` arguments.

    Returns:
        The trained :class:`~lit_repr.models.Classifier`, in eval mode.

    Example:
        >>> x, y = torch.rand(40, 8), torch.arange(40) % 2
        >>> model = centralized(x, y, epochs=1, seed=0, classifier={"num_classes": 2, "in_features": 8})
        >>> 0.0 <= accuracy(model, x, y) <= 1.0
        True
    """
    images, labels = _check_data(images, labels)
    epochs = check_int("epochs", epochs)
    seed = _check_seed(seed)
    batch_size = check_int("batch_size", batch_size)
    progress = check_bool("progress", progress)
    extra = _check_trainer_kwargs(trainer_kwargs)
    kwargs = _check_classifier(classifier, lr)
    model = _build_model(kwargs, seed, images)
    _check_labels_fit(labels, model)
    local_update(
        model,
        images,
        labels,
        epochs=epochs,
        seed=derive_seed(seed, 0, 0),
        batch_size=batch_size,
        progress=progress,
        logger=logger,
        trainer_kwargs=extra,
    )
    return model.eval()


@torch.no_grad()
def accuracy(model: torch.nn.Module, images: Tensor, labels: Tensor, batch_size: int = 1024) -> float:
    """Top-1 accuracy of ``model`` (logits out) on ``(images, labels)``, in eval mode; the mode is restored.

    Args:
        model: maps ``(B, ...)`` inputs to ``(B, num_classes)`` logits.
        images: ``(N, ...)`` float inputs.
        labels: ``(N,)`` class indices.
        batch_size: evaluation batch size.

    Example:
        >>> accuracy(torch.nn.Identity(), torch.eye(3), torch.tensor([0, 1, 0]))
        0.6666666666666666
    """
    images, labels = _check_data(images, labels)
    batch_size = check_int("batch_size", batch_size)
    was_training = model.training
    model.eval()
    try:
        correct = torch.zeros((), dtype=torch.long)
        for start in range(0, len(labels), batch_size):
            logits = model(images[start : start + batch_size])
            correct += (logits.argmax(-1) == labels[start : start + batch_size]).sum()
    finally:
        model.train(was_training)
    return int(correct) / len(labels)
