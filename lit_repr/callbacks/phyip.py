"""PhyIPReport: the PhyIP protocol (frozen linear probe against adaptation) attached to any world model's run."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_warn
from torch import nn
from typing_extensions import override

from lit_repr.callbacks.base import TapCallback
from lit_repr.callbacks.loaders import probe_loaders_for
from lit_repr.callbacks.probe import LinearProbe
from lit_repr.checks import check_bool, check_int, check_number
from lit_repr.phyip import (
    PAPER_FIGURES,
    collect,
    fine_tune_scores,
    format_table,
    frozen_features,
    mlp_probe_scores,
    rho_vs_loss_figure,
)

__all__ = ["PhyIPReport"]


class PhyIPReport(Callback):
    """The PhyIP protocol on a run with a frozen :class:`~lit_repr.callbacks.LinearProbe`: ρ and R² per quantity.

    During training it records, at every epoch the probe measures, the SSL loss (``monitor``, by
    default ``val/loss``) and the probe's Pearson ρ and R² per latent on every split (read from
    the probe's readout, one value per output). When training ends it runs the adaptation-based
    evaluations on the same splits, each with its own Lightning ``Trainer`` (single process, with the
    run's ``limit_train_batches`` and ``limit_val_batches``):

    - ``mlp_probe``: an MLP (``mlp_hidden``) trained on the frozen features of ``site``;
    - ``fine_tuned``: the model's representation network (``representation_network()``, e.g.
      :meth:`~lit_repr.models.WorldModel.representation_network`), every weight trained with a
      linear head on all latents jointly (standardised).

    It writes ``phyip.json`` (the table, the per-epoch history, the paper's figures) and
    ``phyip_rho_vs_loss.png`` in the run directory, and logs the table (``add_text``, tag
    ``phyip/table``), the figure of ρ against the SSL loss (``add_figure``, ``phyip/rho_vs_loss``)
    and scalars ``phyip/<method>/<quantity>/<split>/{pearson,r2}`` to every TensorBoard logger.

    Under DDP the adaptation-based evaluations are skipped with a warning (the frozen probe's
    record is exact); run them in a single process (``examples/phyip.py``).

    Args:
        probe: the ``name`` of the frozen ``LinearProbe`` among the trainer's callbacks.
        site: the probe's site to read (default: its first site).
        target: the probe's target holding the latents (default: its first target).
        latent_names: one name per latent (default: the datamodule's ``latent_names`` or
            ``factor_names``, else ``latent0``, ``latent1``, ...).
        id_split: the in-distribution evaluation split.
        ood_split: the out-of-distribution split.
        monitor: the logged SSL loss recorded against ρ.
        adaptation: run the adaptation-based evaluations when training ends.
        finetune_epochs: epochs of fine-tuning.
        finetune_lr: learning rate of fine-tuning.
        mlp_hidden: hidden widths of the MLP probe.
        mlp_epochs: epochs of the MLP probe.
        mlp_lr: learning rate of the MLP probe.
        seed: seed of the adaptation runs.
        output_dir: where the JSON and PNG go (default: the logger's run directory, else the
            trainer's ``default_root_dir``).

    Example:
        >>> import torch
        >>> from lit_repr.models import WorldModel
        >>> from lit_repr.data import ArrayDataModule
        >>> class Springs(ArrayDataModule):  # x(t) = a cos(w t): energy a^2 w^2 / 2
        ...     latent_names = ["amplitude", "energy"]
        ...     def build_splits(self):
        ...         g, t, out = torch.Generator().manual_seed(0), torch.linspace(0, 3, 16), {}
        ...         for split, n, hi in (("train", 96, 1.0), ("val", 32, 1.0), ("test", 32, 1.0), ("ood", 32, 2.0)):
        ...             a, w = hi * (0.5 + torch.rand(n, 1, generator=g)), 1 + torch.rand(n, 1, generator=g)
        ...             x = torch.stack([a * torch.cos(w * t), -a * w * torch.sin(w * t)], -1)
        ...             out[split] = {"x": x, "latents": torch.cat([a, a**2 * w**2 / 2], 1)}
        ...         return out
        >>> probe = LinearProbe(sites="representation", targets="latents", task="regression", mode="frozen",
        ...                     log_figures=False)
        >>> report = PhyIPReport(finetune_epochs=1, mlp_hidden=[16], mlp_epochs=1, output_dir=None)
        >>> trainer = pl.Trainer(max_epochs=2, callbacks=[probe, report], logger=False, enable_progress_bar=False,
        ...                      enable_checkpointing=False, enable_model_summary=False, default_root_dir="/tmp/phyip")
        >>> trainer.fit(WorldModel(obs_shape=[2], representation_dim=8, hidden=[16], context=4), Springs(batch_size=32))
        >>> [h["epoch"] for h in report.history], sorted(report.results)
        ([0, 1], ['fine_tuned', 'frozen_linear', 'mlp_probe'])
    """

    def __init__(
        self,
        probe: str = "probe",
        site: str | None = None,
        target: str | None = None,
        latent_names: Sequence[str] | None = None,
        id_split: str = "test",
        ood_split: str = "ood",
        monitor: str = "val/loss",
        adaptation: bool = True,
        finetune_epochs: int = 10,
        finetune_lr: float = 1e-3,
        mlp_hidden: Sequence[int] = (256, 256),
        mlp_epochs: int = 100,
        mlp_lr: float = 1e-3,
        seed: int = 0,
        output_dir: str | None = None,
    ) -> None:
        super().__init__()
        for name, value in (("probe", probe), ("id_split", id_split), ("ood_split", ood_split), ("monitor", monitor)):
            if not isinstance(value, str) or not value:
                raise ValueError(f"{name} must be a non-empty string, got {value!r}")
        if latent_names is not None and (
            isinstance(latent_names, str) or not latent_names
            or not all(isinstance(n, str) for n in latent_names) or len(set(latent_names)) != len(latent_names)
        ):
            raise ValueError(f"latent_names must be a list of distinct strings, got {latent_names!r}")
        self.probe_name, self.site, self.target = probe, site, target
        self.latent_names = list(latent_names) if latent_names is not None else None
        self.id_split, self.ood_split, self.monitor = id_split, ood_split, monitor
        self.adaptation = check_bool("adaptation", adaptation)
        self.finetune_epochs = check_int("finetune_epochs", finetune_epochs)
        self.finetune_lr = check_number("finetune_lr", finetune_lr, low=0, low_open=True)
        if isinstance(mlp_hidden, int) or not isinstance(mlp_hidden, Sequence):
            raise ValueError(f"mlp_hidden must be a list of widths, got {mlp_hidden!r}")
        self.mlp_hidden = [check_int("mlp_hidden", h) for h in mlp_hidden]
        self.mlp_epochs = check_int("mlp_epochs", mlp_epochs)
        self.mlp_lr = check_number("mlp_lr", mlp_lr, low=0, low_open=True)
        self.seed = check_int("seed", seed, low=0)
        self.output_dir = output_dir
        self.history: list[dict[str, Any]] = []
        self.results: dict[str, dict[str, dict[str, dict[str, float]]]] = {}
        self.table: str = ""
        self._probe: LinearProbe | None = None

    @property
    def state_key(self) -> str:
        return self._generate_state_key(probe=self.probe_name, site=self.site, target=self.target)

    # ------------------------------------------------------------------ setup
    def _find_probe(self, trainer: pl.Trainer) -> LinearProbe:
        probes = [c for c in trainer.callbacks if isinstance(c, LinearProbe)]  # type: ignore[attr-defined]
        found = [p for p in probes if p.name == self.probe_name]
        if not found:
            raise ValueError(
                f"PhyIPReport(probe={self.probe_name!r}) needs a LinearProbe named {self.probe_name!r} among the "
                f"trainer's callbacks; found LinearProbes named {[p.name for p in probes]}"
            )
        probe = found[0]
        if probe.mode != "frozen":
            raise ValueError(f"PhyIPReport needs LinearProbe(mode='frozen') (probes on the train split, scores every "
                             f"split incl. {self.ood_split!r}), got mode={probe.mode!r}")
        if any(t != "regression" for t in probe.tasks.values()):
            raise ValueError(f"PhyIPReport reads regression probes of the latents, got tasks {probe.tasks}")
        if self.target is not None and self.target not in probe.targets:
            raise ValueError(f"target {self.target!r} is not a target of the probe; it has {sorted(probe.targets)}")
        return probe

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        self._probe = self._find_probe(trainer)
        sites = self._probe.sites
        if self.site is not None and self.site not in sites:
            raise ValueError(f"site {self.site!r} is not among the probe's sites {sites}")
        if self.adaptation and not callable(getattr(pl_module, "representation_network", None)):
            raise ValueError(
                f"PhyIPReport(adaptation=True) fine-tunes the model's representation_network(); "
                f"{type(pl_module).__name__} has none (use lit_repr.models.WorldModel, or adaptation=False)"
            )

    def _site(self) -> str:
        assert self._probe is not None
        return self.site or self._probe.sites[0]

    def _target(self) -> str:
        assert self._probe is not None
        return self.target or next(iter(self._probe.targets))

    def _names(self, trainer: pl.Trainer, width: int) -> list[str]:
        names = self.latent_names
        if names is None:
            dm = getattr(trainer, "datamodule", None)
            dm_names = getattr(dm, "latent_names", None) or getattr(dm, "factor_names", None)
            names = list(dm_names) if dm_names is not None else None
        if names is None:
            return [f"latent{i}" for i in range(width)]
        if len(names) != width:
            raise ValueError(f"latent_names has {len(names)} names {names} but the target has {width} columns")
        return [str(n) for n in names]

    # ------------------------------------------------------------------ during training
    def frozen_scores(self, trainer: pl.Trainer) -> dict[str, dict[str, dict[str, float]]]:
        """The probe's last measurement: ``{split: {quantity: {"pearson", "r2"}}}``, one value per output."""
        assert self._probe is not None
        readout = self._probe.readout(self._site(), self._target())
        out: dict[str, dict[str, dict[str, float]]] = {}
        prefix = self._probe.tag(self._site(), self._target(), "", "")[:-1]  # "<name>/<site>/<target>/"
        splits = [k[len(prefix):-len("/pearson")] for k in self._probe.scores
                  if k.startswith(prefix) and k.endswith("/pearson")]  # the last measurement's evaluation splits
        for split in splits:
            raw = readout.compute_eval(split)
            rho, r2 = raw["pearson"].reshape(-1), raw["r2"].reshape(-1)
            names = self._names(trainer, rho.numel())
            out[split] = {n: {"pearson": float(rho[i]), "r2": float(r2[i])} for i, n in enumerate(names)}
        return out

    @override
    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # after every callback's on_validation_epoch_end: the probe has measured this epoch
        probe = self._probe
        if probe is None or trainer.sanity_checking or trainer.current_epoch % probe.every_n_epochs:
            return
        if not probe.readouts:
            return
        loss = trainer.callback_metrics.get(self.monitor)
        if loss is None:
            rank_zero_warn(f"PhyIPReport: {self.monitor!r} is not logged; known metrics: "
                           f"{sorted(trainer.callback_metrics)}")
            return
        record = {"epoch": int(trainer.current_epoch), "step": int(trainer.global_step), "ssl_loss": float(loss),
                  "scores": self.frozen_scores(trainer)}
        train_loss = trainer.callback_metrics.get("train/loss_epoch", trainer.callback_metrics.get("train/loss"))
        if train_loss is not None:
            record["train_loss"] = float(train_loss)
        self.history = [h for h in self.history if h["epoch"] != record["epoch"]] + [record]

    # ------------------------------------------------------------------ after training
    @override
    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._probe is None or not self.history:
            rank_zero_warn("PhyIPReport: the probe recorded no epoch (no validation ran); nothing to report")
            return
        names = list(next(iter(self.history[-1]["scores"].values()), {}).keys())
        self.results = {"frozen_linear": self.history[-1]["scores"]}
        if self.adaptation and trainer.world_size > 1:
            rank_zero_warn("PhyIPReport: the adaptation-based evaluations run in a single process; skipped under "
                           "DDP (run examples/phyip.py)")
        elif self.adaptation:
            self.results.update(self.adapt(trainer, pl_module, names))
        if trainer.is_global_zero:
            self.write(trainer, names)

    def adapt(self, trainer: pl.Trainer, pl_module: pl.LightningModule, names: list[str]) -> dict:
        """The MLP probe and the fine-tuned encoder on the probe's loaders: ``{method: {split: scores}}``."""
        assert self._probe is not None
        loaders = probe_loaders_for(trainer, self._probe.probe_loaders)
        fit = self._probe.fit_split
        if fit not in loaders:
            raise ValueError(f"PhyIPReport: the probe's fit split {fit!r} is not among the loaders {sorted(loaders)}")
        spec = self._probe.targets[self._target()]
        latents = {s: collect(dl, spec) for s, dl in loaders.items()}
        feats = frozen_features(pl_module, self._site(), loaders)
        val = "val" if "val" in loaders else None
        # a reduced run (limit_train_batches / limit_val_batches) reduces the adaptation runs alike
        limits = {k: v for k, v in (("limit_train_batches", trainer.limit_train_batches),
                                    ("limit_val_batches", trainer.limit_val_batches)) if v != 1.0}
        mlp = mlp_probe_scores(feats, latents, names, hidden=self.mlp_hidden, max_epochs=self.mlp_epochs,
                               lr=self.mlp_lr, fit_split=fit, val_split=val, seed=self.seed, trainer_kwargs=limits)
        network: nn.Module = pl_module.representation_network()  # type: ignore[operator]
        # the loaders' batches carry the target under the probe's spec; fine-tuning reads it there too
        tuned = fine_tune_scores(network, loaders, names, feats[fit].shape[1], max_epochs=self.finetune_epochs,
                                 lr=self.finetune_lr, fit_split=fit, val_split=val, target_key=spec,
                                 input_key=self._probe.input_key or "x", seed=self.seed, trainer_kwargs=limits)
        return {"mlp_probe": mlp, "fine_tuned": tuned}

    def run_dir(self, trainer: pl.Trainer) -> str:
        """Where the JSON and the PNG are written."""
        if self.output_dir:
            return self.output_dir
        for logger in trainer.loggers:
            if getattr(logger, "log_dir", None):
                return str(logger.log_dir)
        return str(trainer.default_root_dir)

    def write(self, trainer: pl.Trainer, names: list[str]) -> None:
        """Log the table, the figure and the scalars; write ``phyip.json`` and ``phyip_rho_vs_loss.png``."""
        self.table = format_table(self.results, names, self.id_split, self.ood_split)
        splits = [s for s in (self.id_split, self.ood_split) if s in self.history[-1]["scores"]]
        fig = rho_vs_loss_figure(self.history, names, splits=splits or list(self.history[-1]["scores"]))
        out = self.run_dir(trainer)
        os.makedirs(out, exist_ok=True)
        fig.savefig(os.path.join(out, "phyip_rho_vs_loss.png"), dpi=110)
        step = trainer.global_step
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_text("phyip/table", "```\n" + self.table + "\n```", global_step=step)
            metrics = {f"phyip/{m}/{q}/{s}/{k}": v for m, per in self.results.items() for s, qs in per.items()
                       for q, ks in qs.items() for k, v in ks.items() if not math.isnan(v)}
            logger.log_metrics(metrics, step=step)
        TapCallback.add_figure(trainer, "phyip/rho_vs_loss", fig)  # to every TensorBoard logger; closes it
        with open(os.path.join(out, "phyip.json"), "w") as fh:
            json.dump({"results": self.results, "history": self.history, "latent_names": names,
                       "id_split": self.id_split, "ood_split": self.ood_split, "paper": PAPER_FIGURES,
                       "table": self.table}, fh, indent=1, allow_nan=True)

    # ------------------------------------------------------------------ checkpoints
    @override
    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = list(state_dict.get("history", []))
