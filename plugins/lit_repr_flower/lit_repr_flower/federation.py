"""The settings both Flower apps read, and the data each side builds from them.

One :class:`FlowerFederation` describes a FederatedFactory run: the data set and its partition (which the
clients build locally, with the same partitioner and seed as the core's ``LocalEngine``), the prior the
clients fit, the server's classifier, and the failure policy (``min_clients``, ``min_classes``, time
limits). Under ``flwr run`` it comes from the app's run config (``[tool.flwr.app.config]`` in the plugin's
``pyproject.toml``, overridden with ``--run-config``): keys are the field names with ``-`` for ``_``, and
dict- or list-valued fields are JSON text. In Python it is passed to :func:`~lit_repr_flower.server_app.make_server_app`
and :func:`~lit_repr_flower.client_app.make_client_app`.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from operator import itemgetter
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from lit_repr.checks import check_int, check_number

__all__ = ["FlowerFederation", "build_datamodule", "load_splits", "client_shard"]

_DICT_FIELDS = ("data_args", "partition_args", "prior_config", "prior_trainer", "classifier", "classifier_trainer",
                "unlearn")

_FACTORY_FIELDS = ("partition", "partition_args", "prior", "prior_config", "prior_trainer", "classifier",
                   "classifier_trainer", "samples_per_class", "seed", "batch_size", "run_dir", "unlearn")
_FACTORY_ONLY = ("modes", "baselines", "baseline_args", "eval_split", "progress", "num_threads")  # local pipeline's
_FACTORY_KEYS = ("data", *_FACTORY_FIELDS, *_FACTORY_ONLY)
_FLOWER_ONLY = ("classes", "min_clients", "min_classes", "connect_timeout", "reply_timeout")


@dataclass(frozen=True)
class FlowerFederation:
    """What a FederatedFactory run on Flower does: data, partition, prior, server classifier, failure policy.

    Args:
        data: a lit_repr ``ArrayDataModule`` with images, by class name in :mod:`lit_repr.data`
            (``"DigitsDataModule"``) or dotted path; its ``train`` split is partitioned, ``test`` evaluates.
        data_args: its constructor kwargs (``DigitsDataModule`` gets ``layout="image"`` by default).
        classes: keep only the classes ``0 .. classes - 1`` (``None``: all), for small runs.
        partition: the partitioner, ``"silos"``, ``"classes_per_client"`` or ``"dirichlet"``
            (:mod:`lit_repr.federated.partition`).
        partition_args: its kwargs besides ``labels`` and ``seed`` (e.g. ``{"num_clients": 5, "k": 2}``);
            under Flower, the nodes' ``num-partitions`` must equal the partition's number of clients.
        seed: the partition seed and the federation seed (module, synthesis and classifier seeds derive from it).
        prior: the prior kind each client fits per class (``"gmm"``, ``"vae"``, ``"diffusion"``).
        prior_config: the prior's constructor kwargs.
        prior_trainer: Trainer kwargs of each prior's fit.
        classifier: the server classifier's kwargs (``Classifier``).
        classifier_trainer: its Trainer kwargs.
        samples_per_class: synthetic images per class.
        batch_size: the classifier's batch size.
        min_clients: fewer clients answering with valid modules stops the run (no model is trained).
        min_classes: fewer classes covered by valid modules stops the run (``None``: every class is needed).
        connect_timeout: seconds the server waits for ``num_clients`` nodes (at least ``min_clients``) to
            connect, and then for them to say which client they are.
        reply_timeout: seconds the server waits for the clients' modules (``None``: no limit); a client
            that has not answered by then is reported as failed.
        unlearn: ``{"client": c}`` and/or ``{"cls": k}``: after the run, delete those modules and retrain
            (the core's exact unlearning); the report gives the results before and after.
        run_dir: where the server writes ``report.json``, the classifier and the received modules.

    Example:
        >>> f = FlowerFederation(classes=4, prior_config={"num_components": 2}, unlearn={"client": 3})
        >>> FlowerFederation.from_run_config(f.to_run_config()) == f
        True
        >>> FlowerFederation(partition="ring")
        Traceback (most recent call last):
        ...
        ValueError: partition must be one of ['classes_per_client', 'dirichlet', 'silos'], got 'ring'
    """

    data: str = "DigitsDataModule"
    data_args: dict = field(default_factory=dict)
    classes: int | None = None
    partition: str = "silos"
    partition_args: dict = field(default_factory=dict)
    seed: int = 0
    prior: str = "gmm"
    prior_config: dict = field(default_factory=dict)
    prior_trainer: dict = field(default_factory=dict)
    classifier: dict = field(default_factory=lambda: {"hidden": [128]})
    classifier_trainer: dict = field(default_factory=dict)
    samples_per_class: int = 200
    batch_size: int = 64
    min_clients: int = 1
    min_classes: int | None = None
    connect_timeout: float = 120.0
    reply_timeout: float | None = None
    unlearn: dict = field(default_factory=dict)
    run_dir: str = "runs/federated_flower"

    def __post_init__(self) -> None:
        from lit_repr.federated.partition import PARTITIONERS
        from lit_repr.federated.priors import PRIORS

        if not isinstance(self.data, str) or not self.data:
            raise ValueError(f"data must be a DataModule class name, got {self.data!r}")
        for name in _DICT_FIELDS:
            value = getattr(self, name)
            if not isinstance(value, Mapping):
                raise ValueError(f"{name} must be a dict, got {type(value).__name__}")
            try:
                json.dumps(dict(value))
            except (TypeError, ValueError) as err:
                raise ValueError(f"{name} must be JSON-serialisable: {err}") from None
            object.__setattr__(self, name, dict(value))
        if self.classes is not None:
            check_int("classes", self.classes, low=2)
        if self.partition not in PARTITIONERS:
            raise ValueError(f"partition must be one of {sorted(PARTITIONERS)}, got {self.partition!r}")
        clash = sorted({"labels", "seed"} & set(self.partition_args))
        if clash:
            raise ValueError(f"partition_args must not set {clash}: the labels come from the data, the seed is `seed`")
        if "num_clients" in self.partition_args:
            check_int("partition_args['num_clients']", self.partition_args["num_clients"])
        check_int("seed", self.seed, low=0)
        if self.prior not in PRIORS:
            raise ValueError(f"prior must be one of {sorted(PRIORS)}, got {self.prior!r}")
        check_int("samples_per_class", self.samples_per_class)
        check_int("batch_size", self.batch_size)
        check_int("min_clients", self.min_clients)
        if self.num_clients is not None and self.min_clients > self.num_clients:
            raise ValueError(f"min_clients ({self.min_clients}) must be <= the number of clients ({self.num_clients})")
        if self.min_classes is not None:
            check_int("min_classes", self.min_classes)
            if self.classes is not None and self.min_classes > self.classes:
                raise ValueError(f"min_classes ({self.min_classes}) must be <= classes ({self.classes})")
        check_number("connect_timeout", self.connect_timeout, low=0, low_open=True)
        if self.reply_timeout is not None:
            check_number("reply_timeout", self.reply_timeout, low=0, low_open=True)
        if not set(self.unlearn) <= {"client", "cls"}:
            raise ValueError(f"unlearn takes 'client' and/or 'cls', got keys {sorted(self.unlearn)}")
        for key, value in self.unlearn.items():
            check_int(f"unlearn[{key!r}]", value, low=0)
        if not isinstance(self.run_dir, str) or not self.run_dir:
            raise ValueError(f"run_dir must be a path, got {self.run_dir!r}")

    # ------------------------------------------------------------------ Flower run config
    @property
    def num_clients(self) -> int | None:
        """The number of clients if the settings fix it (``partition_args``, or silos over ``classes``)."""
        if "num_clients" in self.partition_args:
            return int(self.partition_args["num_clients"])
        if self.partition == "silos" and self.classes is not None:
            return self.classes
        return None

    def to_run_config(self) -> dict[str, Any]:
        """Flat ``{key: scalar}`` as Flower's run config holds it (dicts as JSON text, ``None`` as ``""``)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, dict):
                value = json.dumps(value, sort_keys=True)
            elif value is None:
                value = ""
            out[f.name.replace("_", "-")] = value
        return out

    @classmethod
    def from_factory_config(cls, path: str | os.PathLike, **overrides: Any) -> FlowerFederation:
        """The federation of a core ``FederatedFactory`` YAML config (``configs/federated_*.yaml``).

        The same data, partition, prior, classifier, seed, run directory and unlearning request; the
        baselines, ``eval_split`` (``test`` only here), ``progress`` and ``num_threads`` are the local
        pipeline's and are not used (each ClientApp's threads are its node's; the priors and the server's
        classifier fit on one thread either way); Flower runs the ``server`` mode.

        Args:
            path: the YAML file.
            **overrides: fields to set besides (e.g. ``min_classes=8``, ``classes=4``).

        Example:
            >>> import tempfile, pathlib
            >>> p = pathlib.Path(tempfile.mkdtemp()) / "f.yaml"
            >>> _ = p.write_text("data: {class_path: DigitsDataModule, init_args: {layout: image}}\\nseed: 3")
            >>> f = FlowerFederation.from_factory_config(p, classes=4)
            >>> f.data, f.data_args, f.seed, f.classes
            ('DigitsDataModule', {'layout': 'image'}, 3, 4)
        """
        import yaml

        text = Path(path).read_text() if Path(path).is_file() else None
        if text is None:
            raise ValueError(f"config {str(path)!r} is not a file (a configs/federated_*.yaml of lit_repr)")
        config = yaml.safe_load(text) or {}
        if not isinstance(config, Mapping):
            raise ValueError(f"config {str(path)!r} must hold a YAML mapping, got {type(config).__name__}")
        kwargs: dict[str, Any] = {}
        for key, value in config.items():
            if key == "data":
                if isinstance(value, Mapping):
                    kwargs["data"] = value.get("class_path")
                    kwargs["data_args"] = dict(value.get("init_args") or {})
                else:
                    kwargs["data"] = value
            elif key in _FACTORY_ONLY:
                if key == "eval_split" and value != "test":
                    raise ValueError(f"config {str(path)!r}: eval_split must be 'test' on Flower, got {value!r}")
            elif key in _FACTORY_FIELDS:
                kwargs[key] = {} if value is None and key in _DICT_FIELDS else value
            else:
                raise ValueError(f"config {str(path)!r} has unknown key {key!r}; known: {sorted(_FACTORY_KEYS)}")
        return cls(**{**kwargs, **overrides})

    @classmethod
    def from_run_config(cls, run_config: Mapping[str, Any]) -> FlowerFederation:
        """The federation a Flower run config describes (unknown keys are an error; missing ones take defaults).

        With a non-empty ``config`` key (a core ``FederatedFactory`` YAML file, present on every machine),
        that file gives the federation (:meth:`from_factory_config`) and only the Flower-side keys
        (``classes``, ``min-clients``, ``min-classes``, ``connect-timeout``, ``reply-timeout``) are taken
        from the run config.

        Args:
            run_config: ``context.run_config`` (keys with ``-`` or ``_``).
        """
        run_config = dict(run_config)
        path = run_config.pop("config", "")
        if path:
            flower_side = cls.from_run_config({k: v for k, v in run_config.items()
                                               if str(k).replace("-", "_") in _FLOWER_ONLY})
            return cls.from_factory_config(path, **{n: getattr(flower_side, n) for n in _FLOWER_ONLY})
        names = {f.name: f for f in dataclasses.fields(cls)}
        kwargs: dict[str, Any] = {}
        for key, value in run_config.items():
            name = str(key).replace("-", "_")
            if name not in names:
                allowed = sorted(n.replace("_", "-") for n in names)
                raise ValueError(f"unknown run config key {key!r}; allowed: {allowed}")
            if name in _DICT_FIELDS and isinstance(value, str):
                try:
                    value = json.loads(value) if value.strip() else {}
                except json.JSONDecodeError as err:
                    raise ValueError(f"run config {key!r} must be JSON text, got {value!r}: {err}") from None
            elif value == "" and name in ("classes", "min_classes", "reply_timeout"):
                value = None
            kwargs[name] = value
        return cls(**kwargs)


def build_datamodule(fed: FlowerFederation) -> Any:
    """The federation's data module (``data`` with ``data_args``), not yet set up."""
    name = fed.data
    if "." in name:
        module, _, attr = name.rpartition(".")
        target = getattr(importlib.import_module(module), attr, None)
    else:
        import lit_repr.data as data_pkg

        target = getattr(data_pkg, name, None)
    if target is None:
        raise ValueError(f"data {name!r} is neither a class of lit_repr.data nor an importable dotted path")
    args = dict(fed.data_args)
    if name.endswith("DigitsDataModule"):
        args.setdefault("layout", "image")
    dm = target(**args)
    if not callable(getattr(dm, "arrays", None)):
        raise ValueError(f"data {name!r} must be an ArrayDataModule (with arrays(split)), got {type(dm).__name__}")
    return dm


def load_splits(fed: FlowerFederation, splits: tuple[str, ...] = ("train", "test")) -> dict[str, tuple[Tensor, Tensor]]:
    """``{split: (images, labels)}`` of the federation's data set, restricted to its ``classes``.

    Images are ``(N, C, H, W)`` floats in ``[0, 1]`` (what the priors and the server expect).

    Args:
        fed: the federation.
        splits: which splits.

    Example:
        >>> x, y = load_splits(FlowerFederation(classes=3), ("test",))["test"]
        >>> x.shape[1:], sorted(set(y.tolist()))
        (torch.Size([1, 8, 8]), [0, 1, 2])
    """
    dm = build_datamodule(fed)
    dm.prepare_data()
    dm.setup("fit")
    out = {}
    for split in splits:
        x, y = itemgetter("x", "y")(dm.arrays(split))  # as the core's FederatedFactory reads them
        y = torch.as_tensor(y).long()
        if x.ndim != 4:
            raise ValueError(
                f"data {fed.data!r} gives {split} inputs of shape {tuple(x.shape)}; images (N, C, H, W) are needed"
            )
        if fed.classes is not None:
            keep = y < fed.classes
            x, y = x[keep], y[keep]
        out[split] = (x.float().contiguous(), y)
    return out


def num_classes(fed: FlowerFederation, labels: Tensor | None = None) -> int:
    """The number of classes of the task: ``classes`` if set, else the data module's (or ``max(labels) + 1``)."""
    if fed.classes is not None:
        return fed.classes
    n = getattr(build_datamodule(fed), "num_classes", None)
    if isinstance(n, int):
        return n
    if labels is None:
        raise ValueError(f"data {fed.data!r} has no num_classes attribute; set classes")
    return int(labels.max()) + 1


def partition(fed: FlowerFederation, labels: Tensor) -> Any:
    """The partition of the training labels (the same call the core's local engine is given)."""
    from lit_repr.federated.partition import PARTITIONERS

    return PARTITIONERS[fed.partition](np.asarray(labels), seed=fed.seed, **fed.partition_args)


def client_shard(fed: FlowerFederation, client: int, num_partitions: int | None = None) -> tuple[Tensor, Tensor]:
    """The training images and labels of one client, as the local engine would give them to it.

    Args:
        fed: the federation.
        client: the client's partition id.
        num_partitions: the number of partitions the node was told (checked against the partition).

    Example:
        >>> x, y = client_shard(FlowerFederation(classes=3), 2)
        >>> sorted(set(y.tolist()))
        [2]
    """
    x, y = load_splits(fed, ("train",))["train"]
    part = partition(fed, y)
    n = len(part.indices)
    if num_partitions is not None and int(num_partitions) != n:
        raise ValueError(
            f"the node says num-partitions={num_partitions} but the {fed.partition!r} partition has {n} clients; "
            f"set partition_args num_clients={num_partitions} or start {n} nodes"
        )
    if not 0 <= int(client) < n:
        raise ValueError(f"partition-id {client} is outside [0, {n}) for the {fed.partition!r} partition")
    idx = torch.from_numpy(np.array(part.indices[int(client)], dtype=np.int64))
    return x[idx], y[idx]
