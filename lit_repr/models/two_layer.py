"""A two-layer network with a controlled lazy/rich initialization and per-layer learning rates.

``f(x) = W2 σ(W1 x + b1) + b2`` with ``σ`` the identity or ReLU. Each neuron ``k`` (row ``w_k`` of
``W1``, column ``a_k`` of ``W2``) starts at scale ``τ`` and imbalance ``δ`` (see
:func:`lit_repr.theory.lazy_rich_init`) and conserves, under gradient flow with the layer rates
``η_w`` (hidden) and ``η_a`` (output), ``δ_k = η_w ‖a_k‖² − η_a (‖w_k‖² + b_k²)``
(:meth:`TwoLayerNetwork.conserved_quantities`). With width 1, no bias and a linear ``σ`` on whitened
inputs, full-batch gradient descent with step ``lr`` follows
:func:`lit_repr.theory.single_neuron_solution` at time ``lr × steps``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_repr.targets import TargetSpec, check_finite, check_target_spec, get_target
from lit_repr.theory.lazy_rich import lazy_rich_init, neuron_conserved_quantities

__all__ = ["TwoLayerNetwork"]

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


class TwoLayerNetwork(pl.LightningModule):
    """``f(x) = W2 σ(W1 x + b1) + b2`` with a (τ, δ) initialization per neuron and a learning rate per layer.

    Tappable sites: ``"hidden"`` (the activations ``σ(W1 x + b1)``, shape ``(B, hidden_features)``),
    ``"hidden.0"`` (the pre-activations) and ``"output"`` (``f(x)``). Batches are dicts (``"x"``,
    ``"y"``) or ``(x, y)`` tuples. The loss is ``½‖f(x) − y‖²`` averaged over the batch
    (``task="regression"``, the convention of :mod:`lit_repr.theory.lazy_rich`: one step of SGD with
    learning rate ``lr`` is a time ``lr`` of the gradient flow) or cross-entropy
    (``task="classification"``, ``out_features`` classes). Logs ``train/loss``, ``val/loss`` (and
    ``val/acc`` for classification). The optimizer is SGD with two parameter groups named
    ``"hidden"`` (``W1``, ``b1``; learning rate ``lr × eta_hidden``) and ``"output"`` (``W2``,
    ``b2``; ``lr × eta_output``).

    Args:
        in_features: input dimension.
        hidden_features: number of hidden neurons.
        out_features: output dimension (number of classes for classification).
        activation: ``"linear"`` or ``"relu"``.
        hidden_bias: whether the hidden layer has a bias (initialized at zero; it counts towards
            ``‖w_k‖²`` in ``δ_k``).
        output_bias: whether the output layer has a bias (initialized at zero).
        init_tau: per-neuron scale ``τ > 0`` with ``τ² = η_w ‖a_k‖² + η_a ‖w_k‖²`` (a number or one
            per neuron).
        init_delta: per-neuron imbalance ``δ = η_w ‖a_k‖² − η_a ‖w_k‖²`` in ``[−τ², τ²]`` (a number or
            one per neuron); ``δ > 0``: larger output weights (the hidden layer learns faster),
            ``δ < 0``: larger hidden weights (the output layer learns faster), ``0``: balanced.
        lr: base learning rate ``> 0``.
        eta_hidden: relative learning rate ``η_w > 0`` of the hidden layer.
        eta_output: relative learning rate ``η_a > 0`` of the output layer.
        momentum: SGD momentum in ``[0, 1)`` (``0``: plain gradient descent).
        task: ``"regression"`` or ``"classification"``.
        dtype: ``"float32"`` or ``"float64"`` (inputs are cast to it).
        input_key: where the input lives in a batch (default: ``"x"`` of a dict, position 0 of a tuple).
        target_key: where the target lives (default: ``"y"`` of a dict, position 1 of a tuple).

    Example:
        >>> model = TwoLayerNetwork(in_features=3, hidden_features=8, init_tau=0.5, init_delta=-0.1)
        >>> model(torch.randn(4, 3)).shape
        torch.Size([4, 1])
        >>> model.conserved_quantities().round(decimals=5).unique()
        tensor([-0.1000])
    """

    def __init__(
        self,
        in_features: int = 2,
        hidden_features: int = 16,
        out_features: int = 1,
        activation: Literal["linear", "relu"] = "relu",
        hidden_bias: bool = False,
        output_bias: bool = False,
        init_tau: float | Sequence[float] = 1.0,
        init_delta: float | Sequence[float] = 0.0,
        lr: float = 0.05,
        eta_hidden: float = 1.0,
        eta_output: float = 1.0,
        momentum: float = 0.0,
        task: Literal["regression", "classification"] = "regression",
        dtype: Literal["float32", "float64"] = "float32",
        input_key: TargetSpec | None = None,
        target_key: TargetSpec | None = None,
    ) -> None:
        super().__init__()
        for name, v in (("in_features", in_features), ("hidden_features", hidden_features),
                        ("out_features", out_features)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        if activation not in ("linear", "relu"):
            raise ValueError(f"activation must be 'linear' or 'relu', got {activation!r}")
        for name, v in (("lr", lr), ("eta_hidden", eta_hidden), ("eta_output", eta_output)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0 or v == float("inf"):
                raise ValueError(f"{name} must be a finite learning rate > 0, got {v!r}")
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
        if task not in ("regression", "classification"):
            raise ValueError(f"task must be 'regression' or 'classification', got {task!r}")
        if task == "classification" and out_features < 2:
            raise ValueError(f"out_features is the number of classes for classification and must be >= 2, "
                             f"got {out_features}")
        if dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
        for name, spec in (("input_key", input_key), ("target_key", target_key)):
            if spec is not None:
                check_target_spec(spec, name)
        self.save_hyperparameters()
        self.task = task
        self.input_key = input_key
        self.target_key = target_key
        self.eta_hidden = float(eta_hidden)
        self.eta_output = float(eta_output)
        torch_dtype = _DTYPES[dtype]
        # Raises the ValueError naming τ, δ and the reachable range before any module is built.
        W1, W2 = lazy_rich_init(
            in_features, hidden_features, out_features, tau=init_tau, delta=init_delta,
            eta_a=self.eta_output, eta_w=self.eta_hidden, dtype=torch_dtype,
        )
        act = nn.ReLU() if activation == "relu" else nn.Identity()
        self.hidden = nn.Sequential(nn.Linear(in_features, hidden_features, bias=hidden_bias, dtype=torch_dtype), act)
        self.output = nn.Linear(hidden_features, out_features, bias=output_bias, dtype=torch_dtype)
        with torch.no_grad():
            self.hidden[0].weight.copy_(W1)
            self.output.weight.copy_(W2)
            for bias in (self.hidden[0].bias, self.output.bias):
                if bias is not None:
                    bias.zero_()

    # ------------------------------------------------------------------ model
    def forward(self, x: Tensor) -> Tensor:
        x = x.reshape(x.shape[0], -1).to(self.output.weight.dtype)
        return self.output(self.hidden(x))

    def conserved_quantities(self) -> Tensor:
        """``δ_k = η_w ‖a_k‖² − η_a (‖w_k‖² + b_k²)`` per hidden neuron (constant under gradient flow)."""
        with torch.no_grad():
            return neuron_conserved_quantities(
                self.hidden[0].weight, self.output.weight, self.hidden[0].bias,
                eta_a=self.eta_output, eta_w=self.eta_hidden,
            )

    # ------------------------------------------------------------------ steps
    def _read(self, batch: Any, spec: TargetSpec | None, key: str, position: int, name: str) -> Tensor:
        if spec is None:
            spec = key if isinstance(batch, Mapping) else position
        return get_target(batch, spec, name)

    def _shared_step(self, batch: Any, stage: str) -> Tensor:
        x = self._read(batch, self.input_key, "x", 0, "input_key")
        y = self._read(batch, self.target_key, "y", 1, "target_key")
        out = self(x)
        check_finite(out, f"{stage} outputs")
        if self.task == "regression":
            y = y.to(out.dtype).reshape(out.shape[0], -1)
            if y.shape != out.shape:
                raise ValueError(f"regression targets must have shape {tuple(out.shape)} (or (batch,) for one "
                                 f"output), got {tuple(y.shape)}")
            loss = 0.5 * (out - y).pow(2).sum(-1).mean()
        else:
            y = y.long().reshape(-1)
            loss = F.cross_entropy(out, y)
            if stage != "train":
                acc = (out.argmax(-1) == y).to(out.dtype).mean()
                self.log(f"{stage}/acc", acc, batch_size=out.shape[0], sync_dist=True)
        self.log(f"{stage}/loss", loss, prog_bar=stage == "train", batch_size=out.shape[0], sync_dist=stage != "train")
        return loss

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        return self._shared_step(batch, "train")

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._shared_step(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._shared_step(batch, "test")

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> Tensor:
        return self(self._read(batch, self.input_key, "x", 0, "input_key"))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        lr = float(self.hparams.lr)
        groups = [
            {"params": list(self.hidden.parameters()), "lr": lr * self.eta_hidden, "name": "hidden"},
            {"params": list(self.output.parameters()), "lr": lr * self.eta_output, "name": "output"},
        ]
        return torch.optim.SGD(groups, lr=lr, momentum=float(self.hparams.momentum))
