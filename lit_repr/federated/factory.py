"""One command for a whole federation: ``python -m lit_repr federate --config configs/federated_digits.yaml``.

:class:`FederatedFactory` runs partition -> client training -> exchange -> synthesis -> classifier ->
evaluation -> report, with the baselines (FedAvg, FedProx, centralized) on the same partition and test
set, and optionally unlearns a client or a class at the end. Its constructor arguments are the config;
:func:`federate_main` parses them with jsonargparse (OmegaConf interpolation, ``--config``, dotted
overrides) the way ``python -m lit_repr fit`` does.

The run directory receives ``modules/`` (the exchanged payloads: ``<client>_<cls>.safetensors`` +
``.json``), ``report.json``, ``config.yaml`` and TensorBoard event files (prior sample grids, the
report's scalars and its table as text).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping, Sequence
from operator import itemgetter
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningDataModule

from lit_repr.checks import check_bool, check_choice, check_int
from lit_repr.federated.engine import LocalEngine, check_images, module_seed
from lit_repr.federated.report import evaluate, format_table, log_report, write_report
from lit_repr.federated.server import MODES, FederatedServer, predict_proba

__all__ = ["FederatedFactory", "federate_main", "BASELINES"]

BASELINES = ("fedavg", "fedprox", "centralized")
_BASELINE_DEFAULTS = {"rounds": 10, "local_epochs": 2, "epochs": 20, "mu": 0.01}


class FederatedFactory:
    """FederatedFactory (Moleri et al., 2026): generative modules exchanged once, a classifier from their samples.

    Args:
        data: a LightningDataModule with an ``arrays(split)`` method giving a dict with ``x`` and ``y``
            (lit_repr's array data modules), whose images are ``(C, H, W)`` floats in ``[0, 1]``
            (e.g. ``DigitsDataModule(layout="image")``).
        partition: partitioner name: ``"silos"``, ``"classes_per_client"`` or ``"dirichlet"``.
        partition_args: its keyword arguments (e.g. ``{"num_clients": 5, "k": 2}``); ``seed`` is ``seed``.
        prior: generative prior kind (``"gmm"``, ``"vae"``, ``"diffusion"``).
        prior_config: the prior's constructor kwargs.
        prior_trainer: Trainer kwargs of each prior's fit (e.g. ``{"max_epochs": 50}``).
        classifier: :class:`~lit_repr.models.classifier.Classifier` kwargs (``num_classes``/``in_features``
            come from the data).
        classifier_trainer: Trainer kwargs of the classifiers (FederatedFactory's and the centralized one's
            ``max_epochs``).
        modes: ``"server"`` and/or ``"local"``.
        samples_per_class: synthetic images per class.
        baselines: any of ``"fedavg"``, ``"fedprox"``, ``"centralized"``.
        baseline_args: ``rounds``, ``local_epochs`` (FedAvg/FedProx), ``mu`` (FedProx), ``epochs``
            (centralized; default: the classifier's ``max_epochs``).
        unlearn: optionally ``{"client": c}`` and/or ``{"cls": k}``: delete those modules at the end and
            retrain; the report gains the accuracy on the forgotten classes before and after.
        eval_split: the split evaluated (``"test"`` or ``"val"``).
        seed: federation seed (partition, priors, synthesis, classifiers, baselines).
        batch_size: classifier batch size.
        run_dir: where the modules, ``report.json`` and the TensorBoard events go.
        progress: progress bars.
        num_threads: torch intra-op threads for the whole run (``None``: leave as is). The default, one,
            is many times faster for small models on busy shared cores; raise it for large priors on a
            machine of your own. Results are bit-for-bit reproducible for a fixed thread count.

    Example:
        >>> from lit_repr.data.digits import DigitsDataModule
        >>> factory = FederatedFactory(DigitsDataModule(layout="image"), prior="gmm", run_dir="unused",
        ...                            modes=["server"], baselines=["fedavg"])
        >>> factory.modes, factory.baselines
        (['server'], ['fedavg'])
    """

    def __init__(
        self,
        data: LightningDataModule,
        partition: str = "silos",
        partition_args: dict | None = None,
        prior: str = "gmm",
        prior_config: dict | None = None,
        prior_trainer: dict | None = None,
        classifier: dict | None = None,
        classifier_trainer: dict | None = None,
        modes: list[str] | None = None,
        samples_per_class: int = 200,
        baselines: list[str] | None = None,
        baseline_args: dict | None = None,
        unlearn: dict | None = None,
        eval_split: str = "test",
        seed: int = 0,
        batch_size: int = 64,
        run_dir: str = "runs/federated",
        progress: bool = True,
        num_threads: int | None = 1,
    ) -> None:
        from lit_repr.federated.partition import PARTITIONERS
        from lit_repr.federated.priors import PRIORS

        if not callable(getattr(data, "arrays", None)):
            raise ValueError(
                f"data must be a data module with an arrays(split) method (e.g. DigitsDataModule), got "
                f"{type(data).__name__}"
            )
        self.data = data
        self.partition = check_choice("partition", partition, tuple(PARTITIONERS))
        self.partition_args = self._dict("partition_args", partition_args)
        if "seed" in self.partition_args:
            raise ValueError("partition_args must not set seed: the partition is seeded by `seed`")
        self.prior = check_choice("prior", prior, tuple(PRIORS))
        self.prior_config = self._dict("prior_config", prior_config)
        self.prior_trainer = self._dict("prior_trainer", prior_trainer)
        self.classifier = self._dict("classifier", classifier)
        for key in ("num_classes", "in_features", "in_channels"):
            if key in self.classifier:
                raise ValueError(f"classifier must not set {key!r}: it comes from the data")
        self.classifier_trainer = self._dict("classifier_trainer", classifier_trainer)
        self.modes = list(MODES) if modes is None else list(modes)
        if not self.modes or not all(m in MODES for m in self.modes) or len(set(self.modes)) != len(self.modes):
            raise ValueError(f"modes must be distinct values from {list(MODES)}, got {modes!r}")
        self.samples_per_class = check_int("samples_per_class", samples_per_class)
        self.baselines = [] if baselines is None else list(baselines)
        bad = [b for b in self.baselines if b not in BASELINES]
        if bad or len(set(self.baselines)) != len(self.baselines):
            raise ValueError(f"baselines must be distinct values from {list(BASELINES)}, got {baselines!r}")
        self.baseline_args = {**_BASELINE_DEFAULTS, **self._dict("baseline_args", baseline_args)}
        unknown = sorted(set(self.baseline_args) - set(_BASELINE_DEFAULTS))
        if unknown:
            raise ValueError(f"baseline_args has unknown keys {unknown}; allowed: {sorted(_BASELINE_DEFAULTS)}")
        self.unlearn = self._dict("unlearn", unlearn)
        if self.unlearn and (not set(self.unlearn) <= {"client", "cls"}):
            raise ValueError(f"unlearn takes 'client' and/or 'cls', got keys {sorted(self.unlearn)}")
        self.eval_split = check_choice("eval_split", eval_split, ("test", "val"))
        self.seed = check_int("seed", seed, low=0)
        self.batch_size = check_int("batch_size", batch_size)
        if not isinstance(run_dir, (str, Path)) or not str(run_dir):
            raise ValueError(f"run_dir must be a directory path, got {run_dir!r}")
        self.run_dir = Path(run_dir)
        self.progress = check_bool("progress", progress)
        self.num_threads = None if num_threads is None else check_int("num_threads", num_threads)
        FederatedServer(2, classifier=self.classifier, trainer=self.classifier_trainer)  # checks them now

    @staticmethod
    def _dict(name: str, value: Any) -> dict:
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise ValueError(f"{name} must be a dict, got {type(value).__name__}")
        return dict(value)

    # ------------------------------------------------------------------ pipeline
    def _load(self) -> tuple[torch.Tensor, ...]:
        self.data.prepare_data()
        self.data.setup("fit")
        x, y = itemgetter("x", "y")(self.data.arrays("train"))
        tx, ty = itemgetter("x", "y")(self.data.arrays(self.eval_split))
        for name, images in (("train", x), (self.eval_split, tx)):
            if images.ndim != 4:
                raise ValueError(
                    f"the {name} images must be (N, C, H, W); got {tuple(images.shape)} (for DigitsDataModule use "
                    "layout='image')"
                )
        x, y = check_images(x.float(), y, name="training images")
        tx, ty = check_images(tx.float(), ty, name=f"{self.eval_split} images")
        return x, y, tx, ty

    def _baseline(self, name: str, x, y, partition, num_classes: int) -> Any:
        from lit_repr.federated import baselines

        classifier = {"num_classes": num_classes, "in_features": int(x[0].numel()), "in_channels": int(x.shape[1]),
                      **self.classifier}
        inputs = x.flatten(1) if self.classifier.get("backbone", "mlp") == "mlp" else x
        args = self.baseline_args
        seed = module_seed(self.seed, "baseline", name)
        extra = {k: v for k, v in self.classifier_trainer.items() if k not in ("max_epochs", "logger")}
        if name == "centralized":
            epochs = args.get("epochs") or self.classifier_trainer.get("max_epochs", 20)
            return baselines.centralized(inputs, y, epochs=epochs, classifier=classifier, seed=seed,
                                         batch_size=self.batch_size, trainer_kwargs=extra)
        return baselines.fedavg(inputs, y, partition, rounds=args["rounds"], local_epochs=args["local_epochs"],
                                classifier=classifier, seed=seed, mu=args["mu"] if name == "fedprox" else 0.0,
                                batch_size=self.batch_size, trainer_kwargs=extra)

    def run(self) -> dict:
        """Run the whole pipeline; the report (also written to ``<run_dir>/report.json`` and printed)."""
        from lit_repr.threads import num_threads

        with num_threads(self.num_threads):
            return self._run()

    def _run(self) -> dict:
        from lightning.pytorch.loggers import TensorBoardLogger

        from lit_repr.federated.partition import PARTITIONERS

        timings: dict[str, float] = {}
        from lit_repr.federated.priors import build_prior

        x, y, tx, ty = self._load()
        build_prior(self.prior, tuple(x.shape[1:]), **self.prior_config)  # a bad prior config fails before training
        num_classes = int(getattr(self.data, "num_classes", 0) or int(max(y.max(), ty.max())) + 1)

        start = time.perf_counter()
        partition = PARTITIONERS[self.partition](y.numpy(), **self.partition_args, seed=self.seed)
        timings["partition"] = time.perf_counter() - start
        print(f"partition {self.partition} {self.partition_args or ''}\n{partition.table(y.numpy())}")

        self.run_dir.mkdir(parents=True, exist_ok=True)
        logger = TensorBoardLogger(save_dir=str(self.run_dir), name="", version="")
        engine = LocalEngine(x, y, partition, prior=self.prior, prior_config=self.prior_config,
                             trainer=self.prior_trainer, seed=self.seed, payload_dir=str(self.run_dir / "modules"),
                             progress=self.progress, logger=logger)
        payloads = engine.run_clients()
        timings["client_training"] = engine.timings["client_training"]
        server = FederatedServer(num_classes, classifier=self.classifier, trainer=self.classifier_trainer,
                                 samples_per_class=self.samples_per_class, seed=self.seed,
                                 batch_size=self.batch_size, progress=self.progress, num_threads=None)
        server.receive(payloads)
        timings["exchange"] = engine.timings.get("transfer", 0.0) + server.timings["verify"]
        client_data = None
        if "local" in self.modes:
            client_data = {t.client: engine.client_data(t.client) for t in engine.tasks()}
        results = server.run(tx, ty, modes=self.modes, client_data=client_data)
        for phase in ("synthesis", "classifier", "local_classifiers"):
            if phase in results["timings"]:
                timings[phase] = results["timings"][phase]
        timings["evaluation"] = results["timings"].get("evaluation", 0.0) + results["timings"].get(
            "local_evaluation", 0.0)
        methods = {f"FederatedFactory/{m}": results[m] for m in self.modes}

        for name in self.baselines:
            start = time.perf_counter()
            model = self._baseline(name, x, y, partition, num_classes)
            probs = predict_proba([model], tx, self.classifier)
            methods[name] = evaluate(probs, ty, num_classes)
            timings[name] = time.perf_counter() - start

        report: dict[str, Any] = {
            "methods": methods,
            "timings": timings,
            "missing_classes": results["missing_classes"],
            "num_modules": len(payloads),
            "module_bytes": sum(p.manifest["num_bytes"] for p in payloads),
            "partition": {"name": self.partition, **self.partition_args,
                          "classes_per_client": {str(c): list(partition.classes(c, y.numpy()))
                                                 for c in range(partition.num_clients)}},
            "prior": {"kind": self.prior, **self.prior_config},
            "seed": self.seed,
        }
        if results["missing_classes"]:
            report["cannot_synthesise"] = (
                f"class(es) {results['missing_classes']} are held by no client: no module, no synthetic images"
            )
        if self.unlearn:
            start = time.perf_counter()
            out = server.unlearn(**self.unlearn)
            timings["unlearning"] = time.perf_counter() - start
            report["unlearning"] = {k: out[k] for k in ("removed", "forgotten_classes", "before", "after")}
            for m in self.modes:
                methods[f"FederatedFactory/{m}/after_unlearning"] = out["results"][m]
        self.server, self.partition_, self.report = server, partition, report
        write_report(report, self.run_dir)
        log_report(logger, methods, timings)
        logger.finalize("success")
        table = format_table(methods, timings)
        print(table)
        if self.unlearn:
            u = report["unlearning"]
            print(f"unlearning {self.unlearn}: accuracy on class(es) {u['forgotten_classes']} before "
                  + ", ".join(f"{m} {100 * v:.2f}%" for m, v in u["before"].items()) + "; after "
                  + ", ".join(f"{m} {100 * v:.2f}%" for m, v in u["after"].items()))
        print(f"report: {self.run_dir / 'report.json'}")
        return report


def federate_main(args: Sequence[str] | None = None) -> dict:
    """``python -m lit_repr federate --config <yaml> [--key=value ...]``: parse, run, return the report.

    Args:
        args: command-line arguments after ``federate`` (default ``sys.argv[2:]``).

    Example:
        >>> federate_main(["--help"])  # doctest: +SKIP
    """
    from jsonargparse import ActionConfigFile, ArgumentParser

    from lit_repr.cli import _import_components

    _import_components()
    args = list(sys.argv[2:] if args is None else args)
    parser = ArgumentParser(
        prog="python -m lit_repr federate",
        description="FederatedFactory: partition, client priors, exchange, synthesis, classifier, report.",
        parser_mode="omegaconf",
        exit_on_error=True,
    )
    parser.add_argument("--config", action=ActionConfigFile, help="a YAML config (configs/federated_*.yaml)")
    parser.add_class_arguments(FederatedFactory, fail_untyped=False, sub_configs=True)
    cfg = parser.parse_args(args)
    try:
        init = parser.instantiate_classes(cfg)
        kwargs = {k: v for k, v in init.items() if k != "config" and not k.startswith("__")}
        factory = FederatedFactory(**kwargs)
    except ValueError as err:  # a bad value: its cause in one line, before anything is written
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    factory.run_dir.mkdir(parents=True, exist_ok=True)
    (factory.run_dir / "config.yaml").write_text(parser.dump(cfg, skip_none=False, skip_check=True))
    return factory.run()
