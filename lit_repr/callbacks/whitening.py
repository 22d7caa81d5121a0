"""Fit a PCA/ZCA whitening on the first training batches and install it as the model's input preprocessing."""

from __future__ import annotations

from typing import Any, Literal

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_only, rank_zero_warn
from torch import Tensor
from typing_extensions import override

from lit_repr.callbacks.base import TapCallback
from lit_repr.features import preserved_rng
from lit_repr.metrics.covariance import CovarianceMoments
from lit_repr.metrics.figures import pyplot
from lit_repr.models.whitening import WHITENING_KINDS, PCAWhitening
from lit_repr.targets import check_target_spec, get_input

__all__ = ["Whitening", "spectrum_figure"]


def spectrum_figure(whitening: PCAWhitening, title: str = "whitening: covariance spectrum") -> Any:
    """The eigenvalues of the fitted covariance (log scale, descending), with ``eps`` and the kept components."""
    plt = pyplot()
    evals = whitening.eigenvalues.detach().cpu().double()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.semilogy(range(1, len(evals) + 1), evals.clamp_min(1e-300).numpy(), ".-", label="eigenvalues")
    if whitening.eps > 0:
        ax.axhline(whitening.eps, color="C3", ls="--", label=f"eps = {whitening.eps:g}")
    if whitening.out_features < whitening.in_features:
        ax.axvline(whitening.out_features + 0.5, color="C2", ls=":", label=f"out_features = {whitening.out_features}")
    ax.set_xlabel("component")
    ax.set_ylabel("variance")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    return fig


class Whitening(Callback):
    """Before training, fit a :class:`~lit_repr.models.whitening.PCAWhitening` on the first
    ``num_batches`` training batches and set it as ``pl_module.whitening``.

    The model must have a settable attribute ``whitening`` (``None`` or a module) that its forward
    applies to the input; :class:`~lit_repr.models.sae.SparseAutoencoder` has one (it checks the
    width, and saves the whitening in its own ``state_dict``). Reading the batches leaves every random
    state (torch, numpy, Python) as it was, so a run with this callback draws the same batches as one
    without. Under DDP each process
    reads its own first batches and the moments are summed over processes
    (:class:`~lit_repr.metrics.covariance.CovarianceMoments`), so every process installs the same
    whitening. Logs ``whitening/identity_deviation`` (``max |C_white − I|`` on the fitting data) and
    an eigenvalue-spectrum figure to TensorBoard loggers. The fitted whitening is kept in the
    callback's checkpoint state, so a resumed run installs it again without refitting. A model that
    already has a whitening when fitting starts and no saved state to restore (e.g. one loaded with
    ``load_from_checkpoint``) keeps its own, with a warning.

    The whitening is fitted and installed at ``on_fit_start``, before Lightning's validation sanity
    check, so the sanity check and every step see the whitened model (this sets up the training
    loader a little earlier than Lightning would, through ``trainer.fit_loop.setup_data()``).

    Args:
        num_batches: training batches to fit on (positive int).
        input_key: where the input is in a batch (a key, a position or a callable); default ``"x"``.
            Inputs are flattened to ``(batch, features)``.
        kind: ``"zca"`` or ``"pca"`` (see :class:`~lit_repr.models.whitening.PCAWhitening`).
        eps: added to the eigenvalues (``>= 0``).
        out_features: PCA reduction to the leading components (``kind="pca"`` only).
        log_figure: whether to send the eigenvalue-spectrum figure to TensorBoard loggers.

    Example:
        >>> cb = Whitening(num_batches=4, kind="zca", eps=1e-5)
        >>> cb.whitening is None
        True
    """

    def __init__(
        self,
        num_batches: int = 8,
        input_key: Any = "x",
        kind: Literal["pca", "zca"] = "zca",
        eps: float = 1e-6,
        out_features: int | None = None,
        log_figure: bool = True,
    ) -> None:
        if not isinstance(num_batches, int) or isinstance(num_batches, bool) or num_batches < 1:
            raise ValueError(f"num_batches must be a positive int, got {num_batches!r}")
        if kind not in WHITENING_KINDS:
            raise ValueError(f"kind must be one of {WHITENING_KINDS}, got {kind!r}")
        if out_features is not None and (not isinstance(out_features, int) or isinstance(out_features, bool)
                                         or out_features < 1 or kind != "pca"):
            raise ValueError(f"out_features must be None or a positive int with kind='pca', got {out_features!r} "
                             f"(kind={kind!r})")
        PCAWhitening(1, kind=kind, eps=eps)  # checks eps
        self.num_batches = num_batches
        self.input_key = check_target_spec(input_key, "input_key")
        self.kind, self.eps, self.out_features, self.log_figure = kind, eps, out_features, log_figure
        self.whitening: PCAWhitening | None = None
        self.identity_deviation: float | None = None
        self._loaded: dict[str, Any] | None = None

    @property
    def state_key(self) -> str:
        return self._generate_state_key(
            num_batches=self.num_batches, kind=self.kind, eps=self.eps, out_features=self.out_features
        )

    @staticmethod
    def _check_model(pl_module: pl.LightningModule) -> None:
        if not hasattr(pl_module, "whitening"):
            raise ValueError(
                f"Whitening needs the model to have a settable attribute 'whitening' (None or a module applied to "
                f"its input); {type(pl_module).__name__} has none"
            )

    @override
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._check_model(pl_module)
        if self._loaded is not None:
            w = PCAWhitening.from_state_dict(self._loaded["state"])
            self._loaded = None
        elif getattr(pl_module, "whitening", None) is not None:
            rank_zero_warn(f"Whitening: {type(pl_module).__name__} already has a whitening and this callback has no "
                           "saved state to restore; the model keeps its own and nothing is fitted")
            self.whitening = pl_module.whitening
            return
        else:
            trainer.fit_loop.setup_data()  # the training loader, before the sanity check (Lightning reuses it)
            w = self._fit(trainer, pl_module)
        self._install(pl_module, w)

    def _fit(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> PCAWhitening:
        loader = trainer.train_dataloader
        xs: list[Tensor] = []
        with preserved_rng():
            for i, batch in enumerate(loader if loader is not None else []):
                if i >= self.num_batches:
                    break
                xs.append(torch.as_tensor(get_input(batch, self.input_key)).detach().flatten(1))
        widths = {x.shape[1] for x in xs}
        if len(widths) != 1:
            raise ValueError(f"Whitening read inputs of widths {sorted(widths)} at input_key={self.input_key!r}; "
                             "it needs at least one batch and one width")
        width = widths.pop()
        # every process must enter the same collective: agree on the width first
        if trainer.world_size > 1:
            widths_all = trainer.strategy.all_gather(torch.tensor(width, device=pl_module.device))
            if len(set(widths_all.flatten().tolist())) != 1:
                raise ValueError(f"Whitening: processes read inputs of different widths {widths_all.tolist()}")
        moments = CovarianceMoments(width).to(pl_module.device)
        for x in xs:
            moments.update(x.to(pl_module.device))
        w = PCAWhitening(width, self.kind, self.eps, self.out_features).to(pl_module.device)
        w.fit(moments)  # compute() sums the states over processes
        self.identity_deviation = w.identity_deviation(moments)
        self._log(trainer, w)
        return w

    def _install(self, pl_module: pl.LightningModule, w: PCAWhitening) -> None:
        w = w.to(pl_module.device)
        try:
            pl_module.whitening = w  # a SparseAutoencoder checks the width here, before anything changes
        except (AttributeError, TypeError) as err:
            raise ValueError(
                f"Whitening needs a settable attribute 'whitening' on {type(pl_module).__name__}; setting it failed: "
                f"{err}"
            ) from err
        self.whitening = w

    @rank_zero_only
    def _log(self, trainer: pl.Trainer, w: PCAWhitening) -> None:
        for logger in trainer.loggers:
            logger.log_metrics({"whitening/identity_deviation": float(self.identity_deviation)},
                               step=trainer.global_step)
        if self.log_figure:
            TapCallback.add_figure(trainer, "whitening/spectrum", spectrum_figure(w))

    @override
    def state_dict(self) -> dict[str, Any]:
        if self.whitening is None:
            return {}
        return {"state": {k: v.cpu() for k, v in self.whitening.state_dict().items()},
                "identity_deviation": self.identity_deviation}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict.get("state") is not None:
            self._loaded = dict(state_dict)
            self.identity_deviation = state_dict.get("identity_deviation")
