"""The engine boundary of FederatedFactory: what a client does, what travels, what the server does.

Any engine (this module's :class:`LocalEngine`, or a distributed one such as the Flower plugin) drives
the same three pieces of code:

1. **Server -> client**: a :class:`ClientTask` (JSON via :meth:`ClientTask.to_dict` /
   :meth:`ClientTask.from_dict`): the client id, the prior kind and its constructor config, the
   Trainer kwargs for fitting it, the federation seed and, optionally, the classes the client is
   expected to hold.
2. **Client step**: :func:`client_step` ``(task, images, labels) -> list[ModulePayload]`` runs on the
   client with its private data ``images`` ``(N, C, H, W)`` in ``[0, 1]`` and ``labels`` ``(N,)``. It fits
   one :class:`~lit_repr.federated.priors.GenerativePrior` per class held, each with the seed
   :func:`module_seed` ``(seed, client, cls)``, so no module depends on any other client: removing a
   client changes no other module (exact unlearning).
3. **Client -> server**: the payloads (:class:`~lit_repr.federated.exchange.ModulePayload`: a JSON
   manifest and safetensors bytes; never a pickle), in a single round.
4. **Server step**: :meth:`FederatedServer.receive <lit_repr.federated.server.FederatedServer.receive>`
   verifies every payload (all-or-nothing) and :meth:`~lit_repr.federated.server.FederatedServer.run`
   synthesises a class-balanced set from the modules alone, trains the classifier and evaluates it.

Example:
    >>> task = ClientTask(client=2, prior="gmm", prior_config={"num_components": 2}, trainer={}, seed=0)
    >>> ClientTask.from_dict(task.to_dict()) == task
    True
    >>> module_seed(0, 2, 5) == module_seed(0, 2, 5) != module_seed(0, 3, 5)
    True
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from lit_repr.federated.exchange import ModulePayload, pack

__all__ = [
    "ClientTask", "client_step", "module_seed", "check_images", "LocalEngine", "quiet_lightning", "QUIET_WARNINGS",
    "QUIET_TRAINER",
]

#: Trainer settings every in-memory fit of the federation shares (the priors, the server's classifiers and
#: the baselines add their own to these): one CPU process, nothing written, no bars, no sanity check.
QUIET_TRAINER: dict[str, Any] = dict(
    accelerator="cpu",
    devices=1,
    enable_checkpointing=False,
    enable_progress_bar=False,
    enable_model_summary=False,
    num_sanity_val_steps=0,
)


#: Lightning warnings that many small in-memory fits raise on purpose (no workers, no validation loader,
#: short epochs, manual optimisation without an optimizer, a deprecation inside Lightning itself).
QUIET_WARNINGS = (
    ".*does not have many workers.*",
    ".*but have no `val_dataloader`.*",
    ".*smaller than the logging interval.*",
    ".*returned `None`, this fit will run with no optimizer.*",
    ".*LeafSpec.*",
)


@contextmanager
def quiet_lightning(banners: bool = True) -> Iterator[None]:
    """Ignore :data:`QUIET_WARNINGS` and silence Lightning's per-fit banners ("GPU available: ...", tips)
    while many small models are trained; other warnings still show.

    Args:
        banners: also silence the banners (``False`` keeps them, e.g. beside a progress bar).

    Example:
        >>> with quiet_lightning():
        ...     pass
    """
    loggers = [logging.getLogger(n) for n in ("lightning.pytorch", "lightning.fabric")] if banners else []
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(max(lg.getEffectiveLevel(), logging.WARNING))
    try:
        with warnings.catch_warnings():
            for message in QUIET_WARNINGS:
                warnings.filterwarnings("ignore", message)
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _build_prior(kind: str, image_shape: tuple[int, ...], **config: Any) -> Any:
    from lit_repr.federated.priors import build_prior

    return build_prior(kind, image_shape, **config)


def module_seed(seed: int, *parts: Any) -> int:
    """A seed in ``[0, 2**31)`` derived from ``seed`` and ``parts`` by SHA-256 (stable across processes).

    ``module_seed(seed, client, cls)`` seeds the prior of one (client, class); the server uses
    ``module_seed(seed, "synthesis", cls, client)`` and the like. Each depends only on its own parts.

    Args:
        seed: the federation seed.
        *parts: ints or strings that name what is seeded.

    Example:
        >>> module_seed(0, 1, 2)
        225124893
    """
    text = json.dumps([int(seed), *[p if isinstance(p, str) else int(p) for p in parts]])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little") & 0x7FFFFFFF


def check_images(images: Any, labels: Any, name: str = "images") -> tuple[Tensor, Tensor]:
    """``images`` ``(N, C, H, W)`` floats in ``[0, 1]`` and integer ``labels`` ``(N,)``; ``ValueError`` otherwise.

    Args:
        images: image tensor.
        labels: label tensor.
        name: how to call the images in messages.

    Example:
        >>> check_images(torch.rand(3, 1, 2, 2), torch.tensor([0, 1, 1]))[1].tolist()
        [0, 1, 1]
    """
    if not isinstance(images, Tensor) or images.ndim != 4:
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"{name} must be a (N, C, H, W) tensor, got {shape}")
    if not images.is_floating_point():
        raise ValueError(f"{name} must be floating point in [0, 1], got dtype {images.dtype}")
    if images.numel() and (not torch.isfinite(images).all() or images.min() < 0 or images.max() > 1):
        raise ValueError(f"{name} must be finite and in [0, 1], got values in [{images.min():g}, {images.max():g}]")
    labels = torch.as_tensor(labels)
    if labels.ndim != 1 or labels.is_floating_point() or labels.dtype == torch.bool:
        raise ValueError(f"labels must be a 1-D integer tensor, got shape {tuple(labels.shape)}, dtype {labels.dtype}")
    if len(labels) != len(images):
        raise ValueError(f"{name} and labels differ in length: {len(images)} vs {len(labels)}")
    if len(labels) and labels.min() < 0:
        raise ValueError(f"labels must be >= 0, got {int(labels.min())}")
    return images, labels.long()


@dataclass(frozen=True)
class ClientTask:
    """What the server asks of one client: fit one prior of this kind per class held.

    Attributes:
        client: the client id (int >= 0).
        prior: the prior kind (``"gmm"``, ``"vae"``, ``"diffusion"``).
        prior_config: constructor kwargs of the prior (``image_shape`` comes from the data).
        trainer: Trainer kwargs for fitting each prior.
        seed: the federation seed; each module's seed is ``module_seed(seed, client, cls)``.
        classes: the classes the client must fit (``None``: every class in its data). A class the
            client has no data for is an error.
    """

    client: int
    prior: str
    prior_config: dict = field(default_factory=dict)
    trainer: dict = field(default_factory=dict)
    seed: int = 0
    classes: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if isinstance(self.client, bool) or not isinstance(self.client, int) or self.client < 0:
            raise ValueError(f"client must be an int >= 0, got {self.client!r}")
        if not isinstance(self.prior, str) or not self.prior:
            raise ValueError(f"prior must be a prior kind such as 'gmm', got {self.prior!r}")
        for key in ("prior_config", "trainer"):
            value = getattr(self, key)
            if not isinstance(value, Mapping):
                raise ValueError(f"{key} must be a dict, got {type(value).__name__}")
            try:
                json.dumps(value)
            except (TypeError, ValueError) as err:
                raise ValueError(f"{key} must be JSON-serialisable: {err}") from None
        if "image_shape" in self.prior_config:
            raise ValueError("prior_config must not contain image_shape: the client takes it from its data")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be an int >= 0, got {self.seed!r}")
        if self.classes is not None:
            classes = tuple(self.classes)
            if not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in classes):
                raise ValueError(f"classes must be ints >= 0, got {self.classes!r}")
            if len(set(classes)) != len(classes):
                raise ValueError(f"classes must be distinct, got {self.classes!r}")
            object.__setattr__(self, "classes", tuple(sorted(classes)))

    def to_dict(self) -> dict:
        """A JSON-serialisable dict."""
        return {
            "client": self.client,
            "prior": self.prior,
            "prior_config": dict(self.prior_config),
            "trainer": dict(self.trainer),
            "seed": self.seed,
            "classes": None if self.classes is None else list(self.classes),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ClientTask:
        """The task :meth:`to_dict` described; unknown or missing keys are an error."""
        if not isinstance(d, Mapping):
            raise ValueError(f"a ClientTask dict is needed, got {type(d).__name__}")
        known = {"client", "prior", "prior_config", "trainer", "seed", "classes"}
        extra = sorted(set(d) - known)
        if extra:
            raise ValueError(f"unknown ClientTask keys {extra}; allowed: {sorted(known)}")
        missing = sorted({"client", "prior"} - set(d))
        if missing:
            raise ValueError(f"ClientTask dict lacks {missing}")
        classes = d.get("classes")
        return cls(
            client=d["client"],
            prior=d["prior"],
            prior_config=dict(d.get("prior_config") or {}),
            trainer=dict(d.get("trainer") or {}),
            seed=d.get("seed", 0),
            classes=None if classes is None else tuple(classes),
        )


def client_step(
    task: ClientTask, images: Tensor, labels: Tensor, *, logger: Any = None, progress: Any = None
) -> list[ModulePayload]:
    """Fit one prior per class the client holds and pack each: the whole client side of a federation.

    Args:
        task: what to fit (see :class:`ClientTask`).
        images: the client's images ``(N, C, H, W)``, floats in ``[0, 1]``.
        labels: their classes ``(N,)``.
        logger: optional Lightning logger for the priors' sample grids.
        progress: optional callable ``progress(cls)`` called after each class.

    Returns:
        One :class:`~lit_repr.federated.exchange.ModulePayload` per class, in class order.

    Example:
        >>> task = ClientTask(client=0, prior="gmm", classes=(4,))
        >>> client_step(task, torch.rand(2, 1, 2, 2), torch.tensor([1, 1]))
        Traceback (most recent call last):
        ...
        ValueError: client 0 is asked for class(es) [4] but holds no data for them (its classes: [1])
    """
    if not isinstance(task, ClientTask):
        raise ValueError(f"task must be a ClientTask, got {type(task).__name__}")
    images, labels = check_images(images, labels, name=f"client {task.client}'s images")
    held = sorted(int(c) for c in torch.unique(labels).tolist())
    if task.classes is None:
        classes = held
    else:
        absent = [c for c in task.classes if c not in held]
        if absent:
            raise ValueError(
                f"client {task.client} is asked for class(es) {absent} but holds no data for them (its classes: {held})"
            )
        classes = list(task.classes)
    if not classes:
        raise ValueError(f"client {task.client} has no data")
    image_shape = tuple(int(s) for s in images.shape[1:])
    _build_prior(task.prior, image_shape, **task.prior_config)  # a bad kind or config fails before any fitting
    payloads = []
    for cls in classes:
        prior = _build_prior(task.prior, image_shape, **task.prior_config)
        with quiet_lightning():
            prior.fit_data(
                images[labels == cls].contiguous(),
                seed=module_seed(task.seed, task.client, cls),
                trainer_kwargs=dict(task.trainer),
                logger=logger,
            )
        payloads.append(pack(prior, task.client, cls))
        if progress is not None:
            progress(cls)
    return payloads


def _index_tensor(idx: Any) -> Tensor:
    """Indices as a long tensor (a copy: partitions hold read-only arrays)."""
    return torch.tensor(np.asarray(idx), dtype=torch.long)


class LocalEngine:
    """Runs every client's :func:`client_step` one after another in this process, then hands the payloads over.

    The engine holds the partition's data; the server sees only payloads. Each client's payloads are
    written to ``payload_dir`` (when given) and read back before the server receives them, as a real
    transfer would, so the whole exchange path is exercised.

    Args:
        images: all training images ``(N, C, H, W)`` in ``[0, 1]``.
        labels: their classes ``(N,)``.
        partition: a :class:`~lit_repr.federated.partition.Partition` (per-client index arrays).
        prior: prior kind.
        prior_config: prior constructor kwargs.
        trainer: Trainer kwargs for fitting each prior.
        seed: federation seed.
        payload_dir: where to write the payloads (``None``: keep them in memory).
        progress: show a progress bar over clients and classes.
        logger: optional Lightning logger given to every prior's fit (a TensorBoard logger receives a grid
            of samples per prior).

    Example:
        >>> import numpy as np
        >>> from types import SimpleNamespace
        >>> part = SimpleNamespace(indices=(np.array([0, 1]),), num_classes=2)
        >>> LocalEngine(torch.rand(2, 1, 2, 2), torch.tensor([0, 1]), part, prior="gmm").tasks()[0].classes
        (0, 1)
    """

    def __init__(
        self,
        images: Tensor,
        labels: Tensor,
        partition: Any,
        prior: str = "gmm",
        prior_config: dict | None = None,
        trainer: dict | None = None,
        seed: int = 0,
        payload_dir: str | None = None,
        progress: bool = True,
        logger: Any = None,
    ) -> None:
        self.images, self.labels = check_images(images, labels)
        indices = getattr(partition, "indices", None)
        if not isinstance(indices, Sequence) or not indices:
            raise ValueError("partition must be a Partition with per-client `indices`")
        n = len(self.labels)
        for c, idx in enumerate(indices):
            idx = _index_tensor(idx)
            if idx.ndim != 1 or (idx.numel() and (idx.min() < 0 or idx.max() >= n)):
                raise ValueError(f"partition indices of client {c} must be 1-D indices into {n} samples")
        self.partition = partition
        self.prior = prior
        self.prior_config = dict(prior_config or {})
        self.trainer = dict(trainer or {})
        self.seed = seed
        self.payload_dir = payload_dir
        self.progress = bool(progress)
        self.logger = logger
        self.tasks()  # validates prior/prior_config/trainer/seed now
        self.timings: dict[str, float] = {}

    def client_data(self, client: int) -> tuple[Tensor, Tensor]:
        """The images and labels of one client."""
        idx = _index_tensor(self.partition.indices[client])
        return self.images[idx], self.labels[idx]

    def tasks(self) -> list[ClientTask]:
        """One task per client with data, asking for every class it holds."""
        tasks = []
        for c, idx in enumerate(self.partition.indices):
            if len(idx) == 0:
                continue
            held = tuple(sorted(int(v) for v in torch.unique(self.labels[_index_tensor(idx)]).tolist()))
            tasks.append(ClientTask(c, self.prior, self.prior_config, self.trainer, self.seed, held))
        return tasks

    def run_clients(self, clients: Sequence[int] | None = None) -> list[ModulePayload]:
        """Run the client step of every client (or of ``clients``); the payloads, as the server would receive them."""
        from tqdm.auto import tqdm

        tasks = [t for t in self.tasks() if clients is None or t.client in set(clients)]
        total = sum(len(t.classes) for t in tasks)
        bar = tqdm(total=total, desc="client priors", unit="module", disable=not self.progress, leave=False)
        payloads: list[ModulePayload] = []
        start = time.perf_counter()
        try:
            for task in tasks:
                bar.set_postfix_str(f"client {task.client}")
                images, labels = self.client_data(task.client)
                payloads.extend(
                    client_step(task, images, labels, logger=self.logger, progress=lambda _: bar.update(1))
                )
        finally:
            bar.close()
        self.timings["client_training"] = time.perf_counter() - start
        if self.payload_dir is not None:
            from lit_repr.federated.exchange import load_payloads, save_payloads

            start = time.perf_counter()
            save_payloads(payloads, self.payload_dir)
            wanted = {(p.client, p.cls) for p in payloads}
            payloads = [p for p in load_payloads(self.payload_dir) if (p.client, p.cls) in wanted]
            self.timings["transfer"] = time.perf_counter() - start
        return payloads

    def run(self, server: Any, **run_kwargs: Any) -> dict:
        """Client steps, then ``server.receive`` and ``server.run(**run_kwargs)``; the server's result."""
        payloads = self.run_clients()
        server.receive(payloads)
        return server.run(**run_kwargs)
