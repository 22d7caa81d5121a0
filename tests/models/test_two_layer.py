import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import lit_repr
from lit_repr.cli import LitReprCLI
from lit_repr.data import TeacherStudentDataModule
from lit_repr.models import TwoLayerNetwork
from lit_repr.theory import single_neuron_solution


@pytest.mark.parametrize("activation,bias", [("relu", True), ("linear", False)])
def test_tiny_fit_reduces_the_loss(trainer_kwargs, activation, bias):
    pl.seed_everything(0)
    dm = TeacherStudentDataModule(in_features=5, num_teacher_neurons=3, num_train=256, num_val=128, num_test=0,
                                  radius=5**0.5, batch_size=64)
    model = TwoLayerNetwork(in_features=5, hidden_features=32, activation=activation, hidden_bias=bias,
                            output_bias=bias, init_tau=0.5, init_delta=0.0, lr=0.05)
    dm.setup("fit")
    before = pl.Trainer(**trainer_kwargs).validate(model, dm, verbose=False)[0]["val/loss"]
    pl.Trainer(max_epochs=10, **trainer_kwargs).fit(model, dm)
    after = pl.Trainer(**trainer_kwargs).validate(model, dm, verbose=False)[0]["val/loss"]
    assert after < 0.5 * before


def test_tuple_batches_float64_and_classification(trainer_kwargs):
    pl.seed_everything(1)
    x = torch.randn(128, 4, dtype=torch.float64)
    y = (x[:, 0] > 0).long()
    loader = DataLoader(TensorDataset(x, y), batch_size=128)
    model = TwoLayerNetwork(in_features=4, hidden_features=16, out_features=2, task="classification",
                            dtype="float64", lr=0.5)
    assert model.output.weight.dtype == torch.float64
    trainer = pl.Trainer(max_epochs=30, **trainer_kwargs)
    trainer.fit(model, loader, loader)
    assert trainer.callback_metrics["val/acc"] > 0.9
    assert model(x.float()).dtype == torch.float64


def test_sites_are_readable():
    model = TwoLayerNetwork(in_features=3, hidden_features=6, out_features=2)
    f = lit_repr.features(model, ["hidden", "hidden.0", "output"], torch.randn(10, 3))
    assert f["hidden"].shape == (10, 6) and f["output"].shape == (10, 2)
    assert torch.all(f["hidden"] >= 0) and torch.allclose(f["hidden"], f["hidden.0"].clamp_min(0))


def test_init_realizes_tau_and_delta_per_neuron():
    tau = [1.0, 2.0, 0.5, 1.5]
    delta = [0.5, -3.0, 0.25, 0.0]
    model = TwoLayerNetwork(in_features=6, hidden_features=4, out_features=3, init_tau=tau, init_delta=delta,
                            eta_hidden=2.0, eta_output=0.5, hidden_bias=True, dtype="float64")
    W1, W2 = model.hidden[0].weight, model.output.weight
    assert torch.allclose(model.conserved_quantities(), torch.tensor(delta, dtype=torch.float64), atol=1e-12)
    tau_sq = 2.0 * W2.pow(2).sum(0) + 0.5 * W1.pow(2).sum(1)
    assert torch.allclose(tau_sq, torch.tensor(tau, dtype=torch.float64) ** 2, atol=1e-12)
    assert torch.all(model.hidden[0].bias == 0)


def test_per_layer_learning_rates_are_parameter_groups():
    model = TwoLayerNetwork(in_features=3, hidden_features=5, hidden_bias=True, output_bias=True,
                            lr=0.1, eta_hidden=3.0, eta_output=0.5)
    opt = model.configure_optimizers()
    groups = {g["name"]: g for g in opt.param_groups}
    assert groups["hidden"]["lr"] == pytest.approx(0.3) and groups["output"]["lr"] == pytest.approx(0.05)
    assert {id(p) for p in groups["hidden"]["params"]} == {id(model.hidden[0].weight), id(model.hidden[0].bias)}
    assert {id(p) for p in groups["output"]["params"]} == {id(model.output.weight), id(model.output.bias)}


class _Record(pl.Callback):
    def __init__(self):
        self.a, self.w = [], []

    def on_train_epoch_end(self, trainer, module):
        self.a.append(module.output.weight.detach().double().reshape(()).item())
        self.w.append(module.hidden[0].weight.detach().double().reshape(-1).numpy().copy())


@pytest.mark.parametrize("delta", [1.0, 0.0, -1.0])
def test_single_neuron_follows_the_exact_solution(trainer_kwargs, delta):
    d, n, lr, steps = 3, 64, 5e-3, 600
    eta_a, eta_w = 1.0, 2.0
    g = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(n, d, generator=g, dtype=torch.float64))
    x = q * n**0.5  # whitened: xᵀx / n = I exactly
    beta = torch.tensor([1.0, -0.5, 0.25], dtype=torch.float64)
    y = x @ beta
    torch.manual_seed(3)
    model = TwoLayerNetwork(in_features=d, hidden_features=1, activation="linear", init_tau=0.5 if delta == 0 else
                            1.2, init_delta=delta, lr=lr, eta_hidden=eta_w, eta_output=eta_a, dtype="float64")
    a0 = model.output.weight.detach().reshape(()).item()
    w0 = model.hidden[0].weight.detach().reshape(-1).numpy().copy()
    rec = _Record()
    loader = DataLoader(TensorDataset(x, y), batch_size=n)  # full batch
    pl.Trainer(max_epochs=steps, callbacks=[rec], **trainer_kwargs).fit(model, loader)
    t = lr * np.arange(1, steps + 1)
    a_t, w_t = single_neuron_solution(a0, w0, beta.numpy(), t, eta_a=eta_a, eta_w=eta_w)
    err = np.linalg.norm(np.c_[np.array(rec.a) - a_t, np.array(rec.w) - w_t], axis=1)
    scale = np.linalg.norm(np.c_[a_t, w_t], axis=1)
    assert (err / scale).max() < 0.02
    assert np.linalg.norm(a_t[-1] * w_t[-1] - beta.numpy()) < 0.5 * np.linalg.norm(a0 * w0 - beta.numpy())


def test_fit_from_yaml(tmp_path):
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"""
seed_everything: 0
trainer:
  max_epochs: 2
  logger: false
  enable_progress_bar: false
  enable_model_summary: false
  enable_checkpointing: false
  default_root_dir: {tmp_path}
model:
  class_path: TwoLayerNetwork
  init_args: {{in_features: 4, hidden_features: 8, init_tau: 0.3, init_delta: -0.05, eta_output: 2.0}}
data:
  class_path: TeacherStudentDataModule
  init_args: {{in_features: 4, num_train: 64, num_val: 32, num_test: 0, batch_size: 32}}
""")
    cli = LitReprCLI(args=["fit", "--config", str(cfg)])
    assert isinstance(cli.model, TwoLayerNetwork) and cli.trainer.current_epoch == 2


@pytest.mark.parametrize("name", ["lr", "eta_hidden", "eta_output"])
@pytest.mark.parametrize("value", [0.0, -0.1])
def test_bad_learning_rates_name_the_argument(name, value):
    with pytest.raises(ValueError, match=rf"{name} must be a finite learning rate > 0, got {value}"):
        TwoLayerNetwork(**{name: value})


def test_other_bad_arguments():
    with pytest.raises(ValueError, match=r"delta=2\.0 is unreachable at tau=1\.0.*\[-1\.0, 1\.0\]"):
        TwoLayerNetwork(init_tau=1.0, init_delta=2.0)
    with pytest.raises(ValueError, match="activation"):
        TwoLayerNetwork(activation="tanh")
    with pytest.raises(ValueError, match="dtype"):
        TwoLayerNetwork(dtype="float16")
    with pytest.raises(ValueError, match="out_features"):
        TwoLayerNetwork(task="classification", out_features=1)
    with pytest.raises(ValueError, match="hidden_features"):
        TwoLayerNetwork(hidden_features=0)
    model = TwoLayerNetwork(in_features=2, out_features=2)
    with pytest.raises(ValueError, match="regression targets must have shape"):
        model.training_step({"x": torch.zeros(3, 2), "y": torch.zeros(3)}, 0)


def test_relu_network_conserves_delta_per_neuron_under_small_step_gd(trainer_kwargs):
    pl.seed_everything(4)
    dm = TeacherStudentDataModule(in_features=4, num_teacher_neurons=3, num_train=128, num_val=0, num_test=0,
                                  radius=2.0, batch_size=128)
    delta = torch.linspace(-0.8, 0.8, 8, dtype=torch.float64)
    model = TwoLayerNetwork(in_features=4, hidden_features=8, hidden_bias=True, output_bias=True, init_tau=1.0,
                            init_delta=delta.tolist(), lr=2e-3, eta_hidden=0.5, eta_output=2.0, dtype="float64")
    dm.setup("fit")
    a_sq0 = model.output.weight.detach().pow(2).sum(0)
    pl.Trainer(max_epochs=150, limit_val_batches=0, **trainer_kwargs).fit(model, dm.train_dataloader())
    assert model.hidden[0].bias.abs().max() > 1e-3  # the biases moved, and count towards δ_k
    drift = (model.conserved_quantities() - delta).abs().max().item()
    moved = (model.output.weight.detach().pow(2).sum(0) - a_sq0).abs().max().item()
    assert moved > 100 * drift  # the norms move; their difference δ_k stays
    assert drift < 5e-3  # first order in the step (δ is exact only for gradient flow)
