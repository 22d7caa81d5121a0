"""KernelDistance: how far training moves a network's neural tangent kernel from initialization.

Lazy training keeps the empirical NTK (nearly) fixed; rich, feature-learning training rotates it
(Kunin et al., "Get rich quick", NeurIPS 2024). The science lives in :mod:`lit_repr.metrics.ntk`;
this callback takes the references at the start of training, measures on a schedule, logs and draws.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_warn
from lightning.pytorch.utilities.model_helpers import is_overridden
from torch import Tensor, nn
from torch.func import functional_call
from torch.utils.data import DataLoader, IterableDataset
from typing_extensions import override

from lit_repr.callbacks.base import TapCallback
from lit_repr.checks import check_int
from lit_repr.features import detached_copy, frozen_mode, preserved_rng
from lit_repr.metrics.ntk import (
    KernelMode,
    activation_hamming,
    conserved_quantities,
    empirical_ntk,
    kernel_distance,
    ntk_chunk_size,
    ntk_history_figure,
    param_distance,
    trainable_parameters,
)
from lit_repr.taps import Tap, first_tensor, resolve_sites
from lit_repr.targets import TargetSpec, check_finite, check_target_spec, get_input

__all__ = ["KernelDistance"]

_MB = 2.0**20


def _inputs_of(batch: Any, input_key: TargetSpec | None, num_samples: int, what: str) -> Tensor:
    x = get_input(batch, input_key)
    if not isinstance(x, Tensor) or x.ndim < 1 or x.shape[0] < 1:
        raise ValueError(f"{what} must hold a tensor of inputs with samples along dimension 0 (input_key="
                         f"{input_key!r}), got {type(x).__name__}")
    return check_finite(x[:num_samples].detach().clone(), what)


def _first_samples(loader: Any, n: int, input_key: TargetSpec | None) -> Tensor | None:
    """The inputs of the first ``n`` samples of ``loader``: its dataset's first items when it is indexable
    (the same on every process, whatever the sampler), else its first batches."""
    if isinstance(loader, Mapping):
        loader = next(iter(loader.values()), None)
    elif isinstance(loader, Sequence) and not isinstance(loader, DataLoader):
        loader = loader[0] if loader else None
    if loader is None:
        return None
    if isinstance(loader, DataLoader) and loader.batch_sampler is not None:
        ds = loader.dataset
        if not isinstance(ds, IterableDataset) and hasattr(ds, "__len__") and len(ds) > 0:
            return _inputs_of(loader.collate_fn([ds[i] for i in range(min(n, len(ds)))]), input_key, n, "the probe")
    chunks, count = [], 0
    for batch in loader:
        chunks.append(_inputs_of(batch, input_key, n - count, "the probe"))
        count += chunks[-1].shape[0]
        if count >= n:
            break
    return torch.cat(chunks) if chunks else None


class KernelDistance(Callback):
    """Distance of the empirical neural tangent kernel (and of the weights) from initialization, on any LightningModule.

    At ``on_train_start`` the callback fixes a probe batch of ``N`` inputs and records the NTK
    ``K₀`` there, the trainable parameters ``θ₀``, the activation patterns of ``relu_sites`` and
    the conserved quantities of ``two_layer`` blocks. Every ``every_n_steps`` optimizer steps and/or
    every ``every_n_epochs`` epochs it logs, under ``<name>/``:

    - ``kernel_distance``: ``S(t) = 1 − ⟨K₀, K_t⟩_F / (‖K₀‖_F ‖K_t‖_F)``; ``kernel_norm_ratio``: ``‖K_t‖_F / ‖K₀‖_F``;
    - ``param_distance``: ``‖θ_t − θ₀‖ / ‖θ₀‖``;
    - ``<site>/activation_hamming`` per ReLU site: the fraction of (sample, unit) signs of the site's
      output that changed since init;
    - ``<first>/delta_mean``, ``<first>/delta_abs_max``, ``<first>/delta_change_max`` per two-layer
      block: mean and largest ``|δ_i|`` of ``δ_i = η_w ‖a_i‖² − η_a ‖w_i‖²``, and ``max_i |δ_i(t) − δ_i(0)|``
      (zero under gradient flow with ReLU units and no weight decay; see
      :func:`~lit_repr.metrics.ntk.conserved_quantities`).

    At the end of fit it draws these quantities over training to TensorBoard (``<name>/history``).

    The NTK is ``K = J Jᵀ``, ``J`` the Jacobian of the outputs on the probe batch with respect to all
    trainable parameters, computed with ``torch.func`` in chunks of samples and accumulated in
    float64 (:func:`~lit_repr.metrics.ntk.empirical_ntk`). Measurements run on a hook-free copy of
    the module (made at ``on_train_start``; its own parameters are never read: the live parameters
    and buffers are passed in) in eval mode, so other callbacks' hooks never see the probe, the
    model's modes and ``.grad`` fields are untouched, and every random state is restored: the run
    is bit-identical with and without the callback. References and history are in ``state_dict``,
    so a resumed run keeps measuring from the original initialization.

    Under DDP every process computes the same values (the probe is read from the dataset by
    index, the same on every process, and the weights are synchronized), so they are logged
    without a collective.

    Args:
        probe_batch: the probe inputs: a tensor, or a dict/tuple batch whose input sits at
            ``input_key``. Default: the first ``num_samples`` samples of the validation dataset
            (else the training dataset), read by index with every random state preserved.
        num_samples: at most this many probe inputs are used (the first ones).
        input_key: where the input sits in a batch; default ``"x"`` for dicts, position 0 for tuples.
        output_fn: picks the network output out of ``module(x)`` (default: the output if it is a
            tensor, else its first tensor); each sample's output is flattened to ``K`` numbers.
        kernel: ``"trace"`` (default): the ``N×N`` kernel summed over the ``K`` outputs;
            ``"full"``: the ``(N·K)×(N·K)`` kernel, sample-major.
        every_n_steps: measure every this many optimizer steps (``None``: not by steps).
        every_n_epochs: measure at the end of every this many training epochs (``None``: not by epochs).
        relu_sites: names or globs of modules whose output signs are compared with init
            (e.g. ``nn.ReLU`` modules); wrong names fail at ``setup`` with the nearest valid names.
        two_layer: ``(first, second)`` pairs of module names with 2-D ``weight`` (``W1`` of shape
            ``(h, d)``, ``W2`` of shape ``(k, h)``) whose conserved quantities are logged. The
            learning rates are those of the optimizer groups holding the weights at the start of
            training (1 when no optimizer holds them); the first layer's bias joins ``w_i``.
        max_memory_mb: bound on the two float64 kernels (``K₀`` and ``K_t``) plus the Jacobian
            alive at once; the Jacobian is chunked over samples to stay under it, and training
            refuses to start, naming the sizes, when not even one sample's Jacobian fits.
        log_figures: draw the history to TensorBoard loggers at the end of fit.
        name: prefix of logged metrics.

    Example:
        >>> from lit_repr.models import Classifier
        >>> from lit_repr.data import DigitsDataModule
        >>> _ = pl.seed_everything(0, verbose=False)
        >>> ntk = KernelDistance(num_samples=32, relu_sites="backbone.0.1", two_layer=[("backbone.0.0", "head")])
        >>> trainer = pl.Trainer(max_epochs=2, callbacks=[ntk], logger=False, enable_progress_bar=False,
        ...                      enable_checkpointing=False, enable_model_summary=False)
        >>> trainer.fit(Classifier(in_features=64, hidden=[16], lr=1e-2), DigitsDataModule())
        >>> ntk.kernel0.shape, ntk.history["step"]
        (torch.Size([32, 32]), [0, 20, 40])
        >>> 0 < ntk.scores["ntk/kernel_distance"] < 1, 0 < ntk.scores["ntk/backbone.0.1/activation_hamming"] < 1
        (True, True)
    """

    #: rung of the evidence ladder (1 association) and the method, as summaries name them
    rung = 1
    method = "kernel distance"

    def __init__(
        self,
        probe_batch: Any = None,
        num_samples: int = 64,
        input_key: TargetSpec | None = None,
        output_fn: Callable[[Any], Tensor] | None = None,
        kernel: KernelMode = "trace",
        every_n_steps: int | None = None,
        every_n_epochs: int | None = 1,
        relu_sites: str | Sequence[str] | None = None,
        two_layer: Sequence[tuple[str, str]] | None = None,
        max_memory_mb: float = 1024.0,
        log_figures: bool = True,
        name: str = "ntk",
    ) -> None:
        super().__init__()
        check_int("num_samples", num_samples)
        for arg, every in (("every_n_steps", every_n_steps), ("every_n_epochs", every_n_epochs)):
            if every is not None:
                check_int(arg, every)
        if every_n_steps is None and every_n_epochs is None:
            raise ValueError("every_n_steps and every_n_epochs are both None: set at least one to measure")
        if input_key is not None:
            check_target_spec(input_key, "input_key")
        if output_fn is not None and not callable(output_fn):
            raise ValueError(f"output_fn must be callable(module output) -> tensor, got {output_fn!r}")
        if kernel not in ("trace", "full"):
            raise ValueError(f"kernel must be 'trace' (N x N) or 'full' (N*K x N*K), got {kernel!r}")
        if isinstance(max_memory_mb, bool) or not isinstance(max_memory_mb, (int, float)) or not max_memory_mb > 0:
            raise ValueError(f"max_memory_mb must be a positive number, got {max_memory_mb!r}")
        if isinstance(relu_sites, str):
            relu_sites = [relu_sites]
        if relu_sites is not None and (not relu_sites or not all(isinstance(s, str) for s in relu_sites)):
            raise ValueError(f"relu_sites must name modules (strings or globs), got {relu_sites!r}")
        pairs = [tuple(p) if isinstance(p, (tuple, list)) else p for p in (two_layer or [])]
        if not all(isinstance(p, tuple) and len(p) == 2 and all(isinstance(s, str) for s in p) for p in pairs):
            raise ValueError(f"two_layer must be a list of (first, second) module-name pairs, got {two_layer!r}")
        if not isinstance(name, str) or not name or "/" in name:
            raise ValueError(f"name must be a non-empty string without '/', got {name!r}")
        self.num_samples = num_samples
        self.input_key = input_key
        self.output_fn = output_fn
        self.kernel = kernel
        self.every_n_steps = every_n_steps
        self.every_n_epochs = every_n_epochs
        self.relu_site_patterns = list(relu_sites or [])
        self.two_layer: list[tuple[str, str]] = pairs  # type: ignore[assignment]
        self.max_memory_mb = float(max_memory_mb)
        self.log_figures = log_figures
        self.name = name
        self.probe: Tensor | None = None
        if probe_batch is not None:
            self.probe = _inputs_of(probe_batch, input_key, num_samples, "probe_batch")
        # references at initialization (restored from checkpoints), history and the last values
        self.kernel0: Tensor | None = None
        self.theta0: dict[str, Tensor] = {}
        self.patterns0: dict[str, Tensor] = {}
        self.delta0: dict[str, Tensor] = {}
        self.lrs: dict[str, tuple[float, float]] = {}
        self.history: dict[str, list[float]] = {"step": []}
        self.scores: dict[str, float] = {}
        self.relu_sites: list[str] = []
        self._module: nn.Module | None = None
        self._shadow: nn.Module | None = None
        self._tap: Tap | None = None
        self._last_step: int | None = None
        self._warned: set[str] = set()

    @property
    def state_key(self) -> str:
        return self._generate_state_key(name=self.name, kernel=self.kernel)

    # ------------------------------------------------------------------ checks and references
    def _check_module(self, pl_module: nn.Module) -> None:
        trainable_parameters(pl_module)  # a model without trainable parameters fails here
        self.relu_sites = resolve_sites(pl_module, self.relu_site_patterns) if self.relu_site_patterns else []
        modules = dict(pl_module.named_modules())
        for pair in self.two_layer:
            for site in pair:
                resolve_sites(pl_module, [site])  # unknown names fail with the nearest valid names
                w = getattr(modules.get(site), "weight", None)
                if not isinstance(w, Tensor) or w.ndim != 2:
                    raise ValueError(f"two_layer {pair!r}: module {site!r} needs a 2-D weight (a Linear layer), "
                                     f"got {type(modules.get(site)).__name__}")
            w1, w2 = modules[pair[0]].weight, modules[pair[1]].weight  # type: ignore[union-attr]
            if w2.shape[1] != w1.shape[0]:
                raise ValueError(f"two_layer {pair!r}: W1 of shape {tuple(w1.shape)} and W2 of shape "
                                 f"{tuple(w2.shape)} do not compose (W2 needs {w1.shape[0]} columns)")

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit":  # the callback measures training only
            self._check_module(pl_module)
        # values logged here are identical on every process by construction
        warnings.filterwarnings("ignore", message=rf"It is recommended to use `self.log\('{re.escape(self.name)}/")

    @override
    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self._tap is not None:
            self._tap.remove()
        self._tap, self._shadow, self._module = None, None, None

    def _state(self, module: nn.Module) -> dict[str, Tensor]:
        return {**dict(module.named_parameters()), **dict(module.named_buffers())}

    def _default_probe(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> Tensor:
        val = trainer.val_dataloaders
        if val is None:
            for owner in (getattr(trainer, "datamodule", None), pl_module):
                if owner is not None and is_overridden("val_dataloader", owner):
                    val = owner.val_dataloader()
                    break
        for loader in (val, trainer.train_dataloader):
            x = _first_samples(loader, self.num_samples, self.input_key) if loader is not None else None
            if x is not None:
                return x
        raise ValueError(f"{self.name}: the trainer has no validation or training data to take a probe batch from; "
                         f"pass probe_batch=")

    def _output_width(self, pl_module: nn.Module, x: Tensor) -> int:
        assert self._shadow is not None
        pick = self.output_fn or first_tensor
        with frozen_mode(self._shadow):
            return int(pick(functional_call(self._shadow, self._state(pl_module), (x[:1],))).numel())

    @override
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        with preserved_rng():
            if self._tap is not None:
                self._tap.remove()
            self._module = pl_module
            self._shadow = detached_copy(pl_module, trainer).eval()
            if self.relu_sites:
                self._tap = Tap(self._shadow, self.relu_sites)
                self._tap.enabled = False
            if self.probe is None:
                self.probe = self._default_probe(trainer, pl_module)
            x = self.probe.to(pl_module.device)
            params = trainable_parameters(pl_module)
            k = self._output_width(pl_module, x)
            if x.shape[0] * (k if self.kernel == "full" else 1) < 2:
                raise ValueError(f"{self.name}: a {x.shape[0]}-sample probe with kernel={self.kernel!r} gives a 1x1 "
                                 f"kernel, whose distance is always 0; use num_samples >= 2")
            itemsize = max(p.element_size() for p in params.values())
            ntk_chunk_size(x.shape[0], k, sum(p.numel() for p in params.values()), itemsize, self.kernel,
                           self.max_memory_mb, num_kernels=2)  # refuses, naming the sizes, before any step
            if self.kernel0 is not None:  # resumed: the references come from the checkpoint
                if sorted(self.theta0) != sorted(params):
                    raise ValueError(f"{self.name}: the checkpoint's initial parameters {sorted(self.theta0)} are not "
                                     f"the trainable parameters of this model {sorted(params)}")
                return
            self.lrs = {first: (self._lr_of(trainer, first), self._lr_of(trainer, second))
                        for first, second in self.two_layer}
            self.theta0 = {n: p.detach().clone() for n, p in params.items()}
            self.kernel0 = self.kernel_of(pl_module)
            self.patterns0 = self._patterns(pl_module)
            self.delta0 = self._deltas(pl_module)
            self._record(trainer, self.measure(pl_module))

    def _lr_of(self, trainer: pl.Trainer, site: str) -> float:
        weight = dict(self._module.named_modules())[site].weight  # type: ignore[union-attr]
        for opt in trainer.optimizers:
            for group in opt.param_groups:
                if any(p is weight for p in group["params"]):
                    return float(group["lr"])
        return 1.0

    # ------------------------------------------------------------------ measurements
    def kernel_of(self, module: nn.Module) -> Tensor:
        """The empirical NTK of ``module`` on the probe inputs (float64; ``N×N`` or ``(N·K)×(N·K)``)."""
        if self.probe is None:
            raise ValueError(f"{self.name}: no probe inputs yet; pass probe_batch= or start training first")
        shadow = self._shadow if self._shadow is not None and module is self._module else module
        x = self.probe.to(next(iter(trainable_parameters(module).values())).device)
        budget = self.max_memory_mb - (self.kernel0.numel() * 8 / _MB if self.kernel0 is not None else 0.0)
        names = list(self.theta0) if self.theta0 else list(trainable_parameters(module))
        with preserved_rng():
            return empirical_ntk(shadow, x, params=names, state=self._state(module), output_fn=self.output_fn,
                                 kernel=self.kernel, max_memory_mb=budget)

    def _patterns(self, module: nn.Module) -> dict[str, Tensor]:
        if self._tap is None or self._shadow is None or self.probe is None:
            return {}
        self._tap.clear()
        self._tap.enabled = True
        try:
            with preserved_rng(), frozen_mode(self._shadow):
                functional_call(self._shadow, self._state(module), (self.probe.to(self._module_device(module)),))
            return {site: f > 0 for site, f in self._tap.read().items()}
        finally:
            self._tap.enabled = False
            self._tap.clear()

    @staticmethod
    def _module_device(module: nn.Module) -> torch.device:
        return next(module.parameters()).device

    def _deltas(self, module: nn.Module) -> dict[str, Tensor]:
        modules = dict(module.named_modules())
        out = {}
        for first, second in self.two_layer:
            lr_w, lr_a = self.lrs.get(first, (1.0, 1.0))
            bias = getattr(modules[first], "bias", None)
            out[first] = conserved_quantities(modules[first].weight, modules[second].weight,  # type: ignore[arg-type]
                                              bias if isinstance(bias, Tensor) else None, lr_w, lr_a)
        return out

    def measure(self, module: nn.Module) -> dict[str, float]:
        """Every quantity of ``module`` now against the references taken at the start of training."""
        if self.kernel0 is None:
            raise ValueError(f"{self.name}: no reference yet; the references are taken at the start of training")
        n = self.name
        kt = self.kernel_of(module)
        k0 = self.kernel0.to(kt.device)
        params = dict(module.named_parameters())
        out = {
            f"{n}/kernel_distance": kernel_distance(k0, kt),
            f"{n}/kernel_norm_ratio": float(kt.norm() / k0.norm()) if float(k0.norm()) > 0 else float("nan"),
            f"{n}/param_distance": param_distance(self.theta0, params),
        }
        for site, pattern in self._patterns(module).items():
            out[f"{n}/{site}/activation_hamming"] = activation_hamming(self.patterns0[site], pattern)
        for first, delta in self._deltas(module).items():
            out[f"{n}/{first}/delta_mean"] = float(delta.mean())
            out[f"{n}/{first}/delta_abs_max"] = float(delta.abs().max())
            out[f"{n}/{first}/delta_change_max"] = float((delta - self.delta0[first].to(delta.device)).abs().max())
        if out[f"{n}/kernel_distance"] != out[f"{n}/kernel_distance"] and "zero" not in self._warned:
            self._warned.add("zero")
            rank_zero_warn(f"{self.name}: the NTK on the probe batch is zero (e.g. every ReLU unit is dead on it); "
                           f"kernel_distance is NaN")
        return out

    def _record(self, trainer: pl.Trainer, values: Mapping[str, float]) -> None:
        step = trainer.global_step
        self._last_step = step
        self.history["step"].append(step)
        for tag, v in values.items():
            self.history.setdefault(tag, [float("nan")] * (len(self.history["step"]) - 1)).append(v)
        self.scores = dict(values)

    def _measure_and_log(self, trainer: pl.Trainer, pl_module: pl.LightningModule, on_step: bool) -> None:
        if self.kernel0 is None or self._last_step == trainer.global_step:
            return
        values = self.measure(pl_module)
        self._record(trainer, values)
        for tag, v in values.items():
            pl_module.log(tag, v, on_step=on_step, on_epoch=not on_step, sync_dist=False)

    @override
    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self.every_n_steps is not None and trainer.global_step % self.every_n_steps == 0:
            self._measure_and_log(trainer, pl_module, on_step=True)

    @override
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.every_n_epochs is not None and (trainer.current_epoch + 1) % self.every_n_epochs == 0:
            self._measure_and_log(trainer, pl_module, on_step=False)

    # ------------------------------------------------------------------ figures and state
    def figure(self) -> Any:
        """A matplotlib figure of the history (:func:`~lit_repr.metrics.ntk.ntk_history_figure`)."""
        return ntk_history_figure(self.history, self.name)

    @override
    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.log_figures and len(self.history["step"]) > 1 and trainer.is_global_zero:
            TapCallback.add_figure(trainer, f"{self.name}/history", self.figure())

    @override
    def state_dict(self) -> dict[str, Any]:
        def cpu(d: Mapping[str, Tensor]) -> dict[str, Tensor]:
            return {k: v.detach().cpu() for k, v in d.items()}

        return {
            "probe": self.probe.cpu() if self.probe is not None else None,
            "kernel0": self.kernel0.cpu() if self.kernel0 is not None else None,
            "theta0": cpu(self.theta0), "patterns0": cpu(self.patterns0), "delta0": cpu(self.delta0),
            "lrs": dict(self.lrs), "history": {k: list(v) for k, v in self.history.items()},
        }

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        device = self._module_device(self._module) if self._module is not None else torch.device("cpu")
        self.probe = state_dict.get("probe", self.probe)
        self.kernel0 = state_dict.get("kernel0")
        self.theta0 = {k: v.to(device) for k, v in state_dict.get("theta0", {}).items()}
        self.patterns0 = dict(state_dict.get("patterns0", {}))
        self.delta0 = dict(state_dict.get("delta0", {}))
        self.lrs = {k: tuple(v) for k, v in state_dict.get("lrs", {}).items()}  # type: ignore[misc]
        self.history = {k: list(v) for k, v in state_dict.get("history", {"step": []}).items()}
        missing = [s for s in self.relu_sites if s not in self.patterns0] + [f for f, _ in self.two_layer
                                                                              if f not in self.delta0]
        if self.kernel0 is not None and missing:
            raise ValueError(f"{self.name}: the checkpoint has no initial reference for {missing}; "
                             f"relu_sites and two_layer must match the run that saved it")
