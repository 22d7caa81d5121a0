"""The server step of FederatedFactory: verified modules -> synthetic class-balanced set -> classifier -> report.

Two modes, as in the paper:

- ``"server"``: the server draws ``samples_per_class`` images of every class from the modules alone
  (split evenly among the clients holding that class, each module with its own generator seeded from
  ``(seed, "synthesis", cls, client)``) and trains one :class:`~lit_repr.models.classifier.Classifier`
  on them through a Lightning ``Trainer`` (deterministic on the CPU).
- ``"local"``: each client trains a classifier on its real data plus synthetic images of the classes
  it does not hold; predictions combine as a product of experts (the sum over clients of their
  log-softmax outputs).

Deleting modules and training again (:meth:`FederatedServer.unlearn`) gives, bit for bit, the model of a
federation in which those modules were never received: every random draw is seeded from names
(seed, class, client), never from the order or number of other modules.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from lit_repr.federated.engine import QUIET_TRAINER, check_images, module_seed, quiet_lightning
from lit_repr.federated.exchange import ExchangeError, ModulePayload, verify
from lit_repr.federated.report import evaluate

__all__ = ["FederatedServer", "DEFAULT_CLASSIFIER_TRAINER", "train_classifier", "predict_proba"]

#: Trainer settings of the server's classifiers (``trainer`` overrides them).
DEFAULT_CLASSIFIER_TRAINER: dict[str, Any] = {**QUIET_TRAINER, "deterministic": True, "logger": False, "max_epochs": 20}
MODES = ("server", "local")


def _inputs(images: Tensor, classifier: Mapping[str, Any]) -> Tensor:
    return images.flatten(1) if classifier.get("backbone", "mlp") == "mlp" else images


def train_classifier(
    images: Tensor,
    labels: Tensor,
    num_classes: int,
    *,
    classifier: Mapping[str, Any] | None = None,
    trainer: Mapping[str, Any] | None = None,
    seed: int = 0,
    batch_size: int = 64,
    num_threads: int | None = 1,
) -> Any:
    """Train a :class:`~lit_repr.models.classifier.Classifier` on images with a Lightning Trainer, reproducibly.

    The model's initialisation, the data order and every other draw come from ``seed``; the caller's
    global random state and determinism flags are left as they were.

    Args:
        images: ``(N, C, H, W)`` training images.
        labels: ``(N,)`` classes.
        num_classes: number of classes (the head's width).
        classifier: ``Classifier`` kwargs (``in_features``/``in_channels`` are set from the images).
        trainer: ``Trainer`` kwargs over :data:`DEFAULT_CLASSIFIER_TRAINER`.
        seed: the seed of the whole fit.
        batch_size: training batch size.
        num_threads: torch intra-op threads during the fit (``None``: leave as is). Small models train
            many times faster on one thread than on busy shared cores, and the weights are bit-for-bit
            reproducible only for a fixed thread count.

    Example:
        >>> x, y = torch.rand(16, 1, 2, 2), torch.arange(16) % 2
        >>> model = train_classifier(x, y, 2, classifier={"hidden": [8]}, trainer={"max_epochs": 1})
        >>> model.head.out_features
        2
    """
    import lightning.pytorch as pl
    from torch.utils.data import DataLoader

    from lit_repr.data.base import TensorDictDataset
    from lit_repr.models.classifier import Classifier
    from lit_repr.threads import num_threads as threads

    config = dict(classifier or {})
    for key in ("num_classes", "in_features", "in_channels"):
        if key in config:
            raise ValueError(f"classifier must not set {key!r}: it comes from the data")
    kwargs = {**DEFAULT_CLASSIFIER_TRAINER, **dict(trainer or {})}
    c, h, w = images.shape[1:]
    algorithms = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Classifier(num_classes=num_classes, in_features=c * h * w, in_channels=c, **config)
        order = torch.Generator().manual_seed(module_seed(seed, "order"))
        data = TensorDictDataset({"x": _inputs(images, config), "y": labels.long()}, add_index=False)
        loader = DataLoader(data, batch_size=min(batch_size, len(data)), shuffle=True, generator=order)
        try:
            with quiet_lightning(), threads(num_threads):
                pl.Trainer(**kwargs).fit(model, train_dataloaders=loader)
        finally:
            torch.use_deterministic_algorithms(algorithms, warn_only=warn_only)
    return model.cpu().eval()


@torch.no_grad()
def predict_proba(
    models: Sequence[Any], images: Tensor, classifier: Mapping[str, Any], batch_size: int = 512
) -> Tensor:
    """Class probabilities of one model, or of a product of experts (softmax of the summed log-softmax).

    Args:
        models: the classifiers (one: its softmax; several: their product of experts).
        images: ``(N, C, H, W)`` images.
        classifier: the classifier config (it decides the input layout).
        batch_size: evaluation batch size.

    Example:
        >>> from lit_repr.models.classifier import Classifier
        >>> m = Classifier(num_classes=3, in_features=4, hidden=[4]).eval()
        >>> p = predict_proba([m, m], torch.rand(5, 1, 2, 2), {})
        >>> p.shape, torch.allclose(p.sum(1), torch.ones(5))
        (torch.Size([5, 3]), True)
    """
    x = _inputs(images, classifier)
    total = None
    for model in models:
        model.eval()
        logp = torch.cat([model(x[i : i + batch_size]).log_softmax(-1) for i in range(0, len(x), batch_size)])
        total = logp if total is None else total + logp
    return total.softmax(-1)


class FederatedServer:
    """Receives verified generative modules, synthesises a class-balanced set and trains the classifier(s).

    Args:
        num_classes: number of classes of the task.
        classifier: :class:`~lit_repr.models.classifier.Classifier` kwargs (e.g. ``{"hidden": [128]}``).
        trainer: classifier ``Trainer`` kwargs over :data:`DEFAULT_CLASSIFIER_TRAINER`.
        samples_per_class: synthetic images per class.
        seed: federation seed (synthesis and classifier seeds derive from it by name).
        batch_size: classifier batch size.
        progress: show a progress bar during synthesis and local training.
        num_threads: torch intra-op threads of the classifier fits (``None``: leave as is).

    Example:
        >>> server = FederatedServer(num_classes=3, samples_per_class=10)
        >>> server.receive([])
        >>> server.missing_classes()
        [0, 1, 2]
    """

    def __init__(
        self,
        num_classes: int,
        classifier: dict | None = None,
        trainer: dict | None = None,
        samples_per_class: int = 200,
        seed: int = 0,
        batch_size: int = 64,
        progress: bool = True,
        num_threads: int | None = 1,
    ) -> None:
        from lit_repr.checks import check_bool, check_int

        self.num_classes = check_int("num_classes", num_classes, low=2)
        if classifier is not None and not isinstance(classifier, Mapping):
            raise ValueError(f"classifier must be a dict of Classifier kwargs, got {type(classifier).__name__}")
        if trainer is not None and not isinstance(trainer, Mapping):
            raise ValueError(f"trainer must be a dict of Trainer kwargs, got {type(trainer).__name__}")
        self.classifier = dict(classifier or {})
        for key in ("num_classes", "in_features", "in_channels"):
            if key in self.classifier:
                raise ValueError(f"classifier must not set {key!r}: it comes from the data")
        self.trainer = dict(trainer or {})
        self.samples_per_class = check_int("samples_per_class", samples_per_class)
        self.seed = check_int("seed", seed, low=0)
        self.batch_size = check_int("batch_size", batch_size)
        self.progress = check_bool("progress", progress)
        self.num_threads = None if num_threads is None else check_int("num_threads", num_threads)
        self.modules: dict[tuple[int, int], Any] = {}
        self.image_shape: tuple[int, ...] | None = None
        self.models: dict[str, Any] = {}
        self.timings: dict[str, float] = {}
        self.results: dict[str, Any] = {}
        self._run_args: dict[str, Any] | None = None
        self._predictions: dict[str, Tensor] = {}
        self._synthetic: dict[tuple, Tensor] = {}

    # ------------------------------------------------------------------ receiving
    def receive(self, payloads: Iterable[ModulePayload]) -> None:
        """Verify every payload, then store them all; on any failure nothing is stored.

        Refused: any :func:`~lit_repr.federated.exchange.verify` failure, a (client, class) received
        twice, a class outside ``[0, num_classes)``, images of another shape than the others'.
        """
        start = time.perf_counter()
        payloads = list(payloads)
        new: dict[tuple[int, int], Any] = {}
        shape = self.image_shape
        for p in payloads:
            prior = verify(p)
            key = (int(p.client), int(p.cls))
            where = f"module of client {key[0]}, class {key[1]}"
            if key in new or key in self.modules:
                raise ExchangeError(f"{where}: received twice")
            if key[1] >= self.num_classes:
                raise ExchangeError(f"{where}: class {key[1]} is outside [0, {self.num_classes})")
            got = tuple(getattr(prior, "image_shape", ()))
            if shape is not None and got != tuple(shape):
                raise ExchangeError(f"{where}: image shape {got} differs from the federation's {tuple(shape)}")
            shape = got
            new[key] = prior
        self.modules.update(new)
        self._synthetic.clear()
        if shape is not None:
            self.image_shape = tuple(shape)
        self.timings["verify"] = self.timings.get("verify", 0.0) + time.perf_counter() - start

    def classes(self) -> list[int]:
        """The classes at least one module models."""
        return sorted({k for _, k in self.modules})

    def missing_classes(self) -> list[int]:
        """The classes no module models: they cannot be synthesised."""
        have = set(self.classes())
        return [k for k in range(self.num_classes) if k not in have]

    def clients(self) -> list[int]:
        """The clients that sent modules."""
        return sorted({c for c, _ in self.modules})

    # ------------------------------------------------------------------ synthesis
    def synthesize(
        self, classes: Iterable[int] | None = None, samples_per_class: int | None = None
    ) -> tuple[Tensor, Tensor]:
        """``samples_per_class`` images of each class from its modules; reproducible and order-independent.

        The count of a class is split evenly over the clients holding it (in client order, the first
        ones taking the remainder); each module samples with a generator seeded from
        ``(seed, "synthesis", cls, client)``.

        Args:
            classes: which classes (default: every class with a module). A class without one is an error.
            samples_per_class: overrides the server's count.
        """
        from lit_repr.checks import check_int

        n = self.samples_per_class if samples_per_class is None else check_int("samples_per_class", samples_per_class)
        classes = self.classes() if classes is None else sorted({int(k) for k in classes})
        missing = [k for k in classes if k not in set(self.classes())]
        if missing:
            raise ValueError(f"class(es) {missing} have no module: they cannot be synthesised")
        if not classes:
            raise ValueError("no modules received: nothing to synthesise")
        from tqdm.auto import tqdm

        xs, ys = [], []
        for k in tqdm(classes, desc="synthesis", unit="class", disable=not self.progress, leave=False):
            holders = tuple(sorted(c for c, kk in self.modules if kk == k))
            key = (k, holders, n)
            if key not in self._synthetic:  # the same seeds give the same images: draw each set once
                base, extra = divmod(n, len(holders))
                parts = []
                for j, client in enumerate(holders):
                    count = base + (1 if j < extra else 0)
                    if count:
                        g = torch.Generator().manual_seed(module_seed(self.seed, "synthesis", k, client))
                        parts.append(self.modules[(client, k)].sample(count, g))
                self._synthetic[key] = torch.cat(parts)
            xs.append(self._synthetic[key])
            ys.append(torch.full((n,), k, dtype=torch.long))
        return torch.cat(xs), torch.cat(ys)

    # ------------------------------------------------------------------ training and evaluation
    def _train(self, images: Tensor, labels: Tensor, name: str) -> Any:
        return train_classifier(
            images, labels, self.num_classes, classifier=self.classifier, trainer=self.trainer,
            seed=module_seed(self.seed, "classifier", name), batch_size=self.batch_size,
            num_threads=self.num_threads,
        )

    def run(
        self,
        test_images: Tensor,
        test_labels: Tensor,
        modes: Sequence[str] = ("server",),
        client_data: Mapping[int, tuple[Tensor, Tensor]] | None = None,
    ) -> dict:
        """Train the classifier(s) of each mode and evaluate them on the test set.

        Args:
            test_images: ``(N, C, H, W)`` test images in ``[0, 1]``.
            test_labels: ``(N,)`` test classes.
            modes: ``"server"`` and/or ``"local"``.
            client_data: for ``"local"``: client id -> (its images, its labels); in a distributed engine
                this step runs on the clients.

        Returns:
            ``{mode: evaluate(...)}`` plus ``"missing_classes"``, ``"modules"`` and ``"timings"``.
        """
        test_images, test_labels = check_images(test_images, test_labels, name="test_images")
        if isinstance(modes, str) or not all(m in MODES for m in modes) or not modes:
            raise ValueError(f"modes must be a non-empty list drawn from {list(MODES)}, got {modes!r}")
        if int(test_labels.max()) >= self.num_classes:
            raise ValueError(f"test_labels must be < num_classes={self.num_classes}, got {int(test_labels.max())}")
        if self.image_shape is not None and tuple(test_images.shape[1:]) != self.image_shape:
            raise ValueError(f"test_images have shape {tuple(test_images.shape[1:])}, the modules {self.image_shape}")
        if "local" in modes:
            if not isinstance(client_data, Mapping) or not client_data:
                raise ValueError("the local mode needs client_data: {client: (images, labels)}")
            client_data = {int(c): check_images(*d, name=f"client {c}'s images") for c, d in client_data.items()}
        if not self.modules:
            raise ValueError("no modules received: call receive(payloads) first")
        self._run_args = {"test_images": test_images, "test_labels": test_labels, "modes": list(modes),
                          "client_data": dict(client_data) if client_data else None}
        return self._run()

    def _run(self) -> dict:
        args = self._run_args
        test_images, test_labels, modes, client_data = (
            args["test_images"], args["test_labels"], args["modes"], args["client_data"])
        results: dict[str, Any] = {"missing_classes": self.missing_classes(),
                                   "modules": [list(k) for k in sorted(self.modules)]}
        timings = {"verify": self.timings.get("verify", 0.0)}
        self.models, self._predictions = {}, {}
        if "server" in modes:
            start = time.perf_counter()
            images, labels = self.synthesize()
            timings["synthesis"] = time.perf_counter() - start
            start = time.perf_counter()
            self.models["server"] = self._train(images, labels, "server")
            timings["classifier"] = time.perf_counter() - start
            start = time.perf_counter()
            probs = predict_proba([self.models["server"]], test_images, self.classifier)
            self._predictions["server"] = probs.argmax(1)
            results["server"] = evaluate(probs, test_labels, self.num_classes, self.missing_classes())
            timings["evaluation"] = time.perf_counter() - start
        if "local" in modes:
            from tqdm.auto import tqdm

            start = time.perf_counter()
            locals_ = []
            for c in tqdm(sorted(client_data), desc="local classifiers", disable=not self.progress, leave=False):
                real_x, real_y = client_data[c]
                own = {int(k) for k in torch.unique(real_y).tolist()}
                others = [k for k in self.classes() if k not in own]
                if others:
                    syn_x, syn_y = self.synthesize(others)
                    real_x, real_y = torch.cat([real_x, syn_x]), torch.cat([real_y, syn_y])
                locals_.append(self._train(real_x, real_y, f"local/{c}"))
            self.models["local"] = locals_
            timings["local_classifiers"] = time.perf_counter() - start
            start = time.perf_counter()
            probs = predict_proba(locals_, test_images, self.classifier)
            have = set(self.classes()) | {int(k) for _, y in client_data.values() for k in torch.unique(y).tolist()}
            missing = [k for k in range(self.num_classes) if k not in have]
            self._predictions["local"] = probs.argmax(1)
            results["local"] = evaluate(probs, test_labels, self.num_classes, missing)
            timings["local_evaluation"] = time.perf_counter() - start
        results["timings"] = timings
        self.results = results
        return results

    # ------------------------------------------------------------------ unlearning
    def unlearn(self, client: int | None = None, cls: int | None = None) -> dict:
        """Delete the modules of ``client`` and/or ``cls`` and train again; accuracy on the forgotten classes.

        In the local mode the removed client's classifier and data go too (with ``cls``: its data of that
        class). The retrained
        models equal, bit for bit, those of a federation that never had these modules.

        Args:
            client: remove every module of this client.
            cls: remove every module of this class (with ``client``: only that client's module of it).

        Returns:
            ``{"removed": [[client, cls], ...], "forgotten_classes": [...], "before": {mode: acc}, "after":
            {mode: acc}, "results": the new run's results}``; an accuracy is that on the test images of
            the forgotten classes.
        """
        if client is None and cls is None:
            raise ValueError("unlearn needs client=..., cls=... or both")
        if self._run_args is None:
            raise ValueError("unlearn retrains the models of the last run: call run(...) first")
        removed = [k for k in sorted(self.modules)
                   if (client is None or k[0] == client) and (cls is None or k[1] == cls)]
        if not removed:
            known = ", ".join(f"({c}, {k})" for c, k in sorted(self.modules))
            raise ValueError(f"no module matches client={client!r}, cls={cls!r}; held modules (client, cls): {known}")
        if len(removed) == len(self.modules):
            raise ValueError("unlearning every module would leave nothing to synthesise from")
        forgotten = sorted({k for _, k in removed})
        test_labels = self._run_args["test_labels"]
        mask = torch.isin(test_labels, torch.tensor(forgotten))

        def forgotten_accuracy() -> dict[str, float]:
            return {mode: float((pred[mask] == test_labels[mask]).float().mean()) if mask.any() else float("nan")
                    for mode, pred in self._predictions.items()}

        before = forgotten_accuracy()
        for k in removed:
            del self.modules[k]
        self._synthetic.clear()
        data = self._run_args["client_data"]
        if data:
            for c in [c for c in data if client is None or c == client]:
                if cls is None:
                    del data[c]  # the client leaves the federation
                else:
                    x, y = data[c]
                    data[c] = (x[y != cls], y[y != cls])  # its data of the forgotten class leaves with it
                    if len(data[c][1]) == 0:
                        del data[c]
        results = self._run()
        return {"removed": [list(k) for k in removed], "forgotten_classes": forgotten, "before": before,
                "after": forgotten_accuracy(), "results": results}
