import io

import lightning.pytorch as pl
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lit_repr.callbacks import KernelDistance


class Regression(pl.LightningModule):
    """A plain LightningModule (nothing from lit_repr) fitting (x, y) tuples with MSE and SGD."""

    def __init__(self, net, lr=0.05, momentum=0.0, groups=None):
        super().__init__()
        self.net, self.lr, self.momentum, self.groups = net, lr, momentum, groups

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.mse_loss(self(x), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", nn.functional.mse_loss(self(x), y))

    def configure_optimizers(self):
        params = self.groups(self) if self.groups else self.parameters()
        return torch.optim.SGD(params, lr=self.lr, momentum=self.momentum)


def _data(n=64, d=3, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=dtype)
    y = torch.relu(x @ torch.linspace(-1, 1, d, dtype=dtype)[:, None]) + 0.1 * x[:, :1]
    return x, y


def _loader(x, y, batch_size=16, shuffle=False):
    return DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=shuffle)


def hand_ntk_full(w1, b1, w2, b2, x):
    """NTK of f(x) = W2 tanh(W1 x + b1) + b2 from closed-form gradients, (N·K)×(N·K) sample-major:
    K[(n,k),(m,l)] = δ_kl (s_n·s_m + 1) + Σ_i W2[k,i] W2[l,i] s'_ni s'_mi (x_n·x_m + 1), s = tanh(z), s' = 1 − s²."""
    n, k = x.shape[0], w2.shape[0]
    s = torch.tanh(x @ w1.T + b1)
    ds = 1 - s**2
    out = torch.zeros(n, k, n, k, dtype=torch.float64)
    for a in range(k):
        for c in range(k):
            out[:, a, :, c] = float(a == c) * (s @ s.T + 1) + ((ds * w2[a]) @ (ds * w2[c]).T) * (x @ x.T + 1)
    return out.reshape(n * k, n * k)


def _two_layer(d=3, h=4, k=1, act=nn.Tanh, bias=True):
    return nn.Sequential(nn.Linear(d, h, bias=bias), act(), nn.Linear(h, k, bias=bias))


def test_kernel_distance_stays_zero_for_models_linear_in_their_parameters(trainer_kwargs):
    x, y = _data()
    for name, net in [("linear", nn.Linear(3, 1)), ("random features", _two_layer(3, 32, 1))]:
        pl.seed_everything(0, verbose=False)
        if name == "random features":
            net[0].requires_grad_(False)
        cb = KernelDistance(every_n_steps=2, every_n_epochs=None)
        trainer = pl.Trainer(max_epochs=5, callbacks=[cb], **trainer_kwargs)
        trainer.fit(Regression(net, lr=0.05), _loader(x, y), _loader(x, y))
        worst = max(abs(v) for v in cb.history["ntk/kernel_distance"])
        print(f"{name}: max |kernel distance| {worst:.2e}, final param distance {cb.scores['ntk/param_distance']:.3f}")
        assert worst <= 1e-6
        assert cb.history["ntk/param_distance"][-1] > 0.1
        assert len(cb.history["step"]) == 11 and cb.history["step"][:3] == [0, 2, 4]


def test_kernel_matches_hand_computed_ntk_of_a_two_layer_network(trainer_kwargs):
    pl.seed_everything(0, verbose=False)
    x, y = _data(32, dtype=torch.float64)
    for k, kernel in [(1, "trace"), (2, "full")]:
        net = _two_layer(3, 4, k).double()
        init = [p.detach().clone() for p in net.parameters()]
        cb = KernelDistance(probe_batch=(x[:8], y[:8]), kernel=kernel)
        trainer = pl.Trainer(max_epochs=3, callbacks=[cb], **trainer_kwargs)
        model = Regression(net, lr=0.1)
        trainer.fit(model, _loader(x, y.expand(-1, k).contiguous()))
        err0 = (cb.kernel0 - hand_ntk_full(*init, x[:8])).abs().max()
        err = (cb.kernel_of(model) - hand_ntk_full(*[p.detach() for p in net.parameters()], x[:8])).abs().max()
        print(f"k={k} ({kernel}): hand NTK error at init {float(err0):.1e}, after training {float(err):.1e}")
        assert cb.kernel0.shape == (8 * (k if kernel == "full" else 1),) * 2
        assert err0 < 1e-10 and err < 1e-10
        assert cb.scores["ntk/kernel_distance"] > 1e-6  # a tanh network's kernel does move


def _rich_or_lazy(scale, lr, trainer_kwargs):
    x, y = _data(64)
    pl.seed_everything(0, verbose=False)
    net = _two_layer(3, 64, 1, act=nn.ReLU, bias=False)
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(scale)
    cb = KernelDistance(probe_batch=x[:32], relu_sites="net.1", two_layer=[("net.0", "net.2")], every_n_epochs=10)
    trainer = pl.Trainer(max_epochs=100, callbacks=[cb], **trainer_kwargs)
    model = Regression(net, lr=lr)
    trainer.fit(model, _loader(x, y, batch_size=64))
    with torch.no_grad():
        return cb.scores, float(nn.functional.mse_loss(model(x), y))


def test_rich_small_init_moves_the_kernel_more_than_lazy_large_init(trainer_kwargs):
    rich, rich_loss = _rich_or_lazy(0.05, 0.1, trainer_kwargs)
    lazy, lazy_loss = _rich_or_lazy(2.0, 0.02, trainer_kwargs)
    for label, s, loss in [("rich (init x0.05)", rich, rich_loss), ("lazy (init x2)", lazy, lazy_loss)]:
        print(f"{label}: kernel distance {s['ntk/kernel_distance']:.2e}, param distance "
              f"{s['ntk/param_distance']:.3f}, activation hamming {s['ntk/net.1/activation_hamming']:.3f}, "
              f"train mse {loss:.4f}, max |delta| {s['ntk/net.0/delta_abs_max']:.2e}, its largest change "
              f"{s['ntk/net.0/delta_change_max']:.2e}")
    assert rich_loss < 0.01 and lazy_loss < 0.05  # both learn
    assert rich["ntk/kernel_distance"] > 0.1
    assert lazy["ntk/kernel_distance"] < 1e-3
    assert rich["ntk/net.1/activation_hamming"] > 5 * lazy["ntk/net.1/activation_hamming"]
    # gradient descent with ReLU units and no weight decay nearly conserves every δ_i (exactly under gradient flow),
    # while the weights themselves move far: relative to |δ| the change stays small
    for s in (rich, lazy):
        assert s["ntk/net.0/delta_change_max"] < 0.1 * s["ntk/net.0/delta_abs_max"]


def test_activation_hamming_and_deltas_equal_direct_computation_with_group_learning_rates(trainer_kwargs):
    x, y = _data(64)
    pl.seed_everything(0, verbose=False)
    net = _two_layer(3, 16, 1, act=nn.ReLU)
    init = [p.detach().clone() for p in net.parameters()]

    def groups(module):
        return [{"params": module.net[0].parameters(), "lr": 0.2}, {"params": module.net[2].parameters(), "lr": 0.05}]

    cb = KernelDistance(probe_batch=x[:40], relu_sites="net.1", two_layer=[("net.0", "net.2")])
    trainer = pl.Trainer(max_epochs=3, callbacks=[cb], **trainer_kwargs)
    trainer.fit(Regression(net, groups=groups), _loader(x, y))
    assert cb.lrs == {"net.0": (0.2, 0.05)}
    with torch.no_grad():
        before = torch.relu(x[:40] @ init[0].T + init[1]) > 0
        after = net[1](net[0](x[:40])) > 0
    assert cb.scores["ntk/net.1/activation_hamming"] == pytest.approx(float((before != after).double().mean()))
    w1, b1, w2 = (p.detach().double() for p in (net[0].weight, net[0].bias, net[2].weight))
    delta = 0.2 * (w2**2).sum(0) - 0.05 * ((w1**2).sum(1) + b1**2)
    assert cb.scores["ntk/net.0/delta_mean"] == pytest.approx(float(delta.mean()))
    assert cb.scores["ntk/net.0/delta_abs_max"] == pytest.approx(float(delta.abs().max()))


def test_bad_input_errors(trainer_kwargs):
    x, y = _data(64)
    frozen = _two_layer()
    frozen.requires_grad_(False)
    frozen_model = Regression(frozen)
    frozen_model.configure_optimizers = lambda: None
    trainer = pl.Trainer(max_epochs=1, callbacks=[KernelDistance()], **trainer_kwargs)
    with pytest.raises(ValueError, match="needs trainable parameters, but Regression has none"):
        trainer.fit(frozen_model, _loader(x, y))
    big = KernelDistance(probe_batch=x, num_samples=64, kernel="full", max_memory_mb=0.01)
    trainer = pl.Trainer(max_epochs=1, callbacks=[big], **trainer_kwargs)
    with pytest.raises(ValueError, match=r"max_memory_mb=0.01 cannot hold .* of 64 samples x 1 outputs x 21 param"):
        trainer.fit(Regression(_two_layer()), _loader(x, y))
    trainer = pl.Trainer(max_epochs=1, callbacks=[KernelDistance(relu_sites="net.relu")], **trainer_kwargs)
    with pytest.raises(ValueError, match=r"site 'net.relu' matches no submodule .* closest valid names: \['net"):
        trainer.fit(Regression(_two_layer()), _loader(x, y))
    trainer = pl.Trainer(max_epochs=1, callbacks=[KernelDistance(two_layer=[("net.0", "net.1")])], **trainer_kwargs)
    with pytest.raises(ValueError, match="module 'net.1' needs a 2-D weight"):
        trainer.fit(Regression(_two_layer()), _loader(x, y))
    for kwargs, match in [
        ({"kernel": "diag"}, "kernel must be 'trace'"),
        ({"num_samples": 0}, "num_samples must be a positive int, got 0"),
        ({"every_n_steps": None, "every_n_epochs": None}, "set at least one"),
        ({"max_memory_mb": -1}, "max_memory_mb must be a positive number, got -1"),
        ({"two_layer": ["net.0"]}, "two_layer must be a list of"),
        ({"name": "a/b"}, "name must be a non-empty string without '/'"),
        ({"probe_batch": {"x": torch.full((4, 3), float("nan"))}}, "probe_batch contains 12 non-finite"),
        ({"probe_batch": {"inputs": x}}, "'x' is not a key"),
    ]:
        with pytest.raises((ValueError, KeyError), match=match):
            KernelDistance(**kwargs)


def _train(with_callback, trainer_kwargs, tmp_path=None):
    pl.seed_everything(7, verbose=False)
    x, y = _data(96)
    net = nn.Sequential(nn.Linear(3, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 1))
    cbs = [KernelDistance(every_n_steps=1, relu_sites="net.1", two_layer=[("net.0", "net.3")])] if with_callback else []
    trainer = pl.Trainer(max_epochs=2, callbacks=cbs, **trainer_kwargs)
    model = Regression(net, lr=0.05, momentum=0.9)
    trainer.fit(model, _loader(x, y, shuffle=True), _loader(x, y))
    return model, cbs


def test_the_run_is_bit_identical_with_and_without_the_callback(trainer_kwargs):
    plain, _ = _train(False, trainer_kwargs)
    watched, (cb,) = _train(True, trainer_kwargs)
    assert len(cb.history["step"]) == 13 and cb.scores["ntk/kernel_distance"] > 0
    for (name, a), (_, b) in zip(plain.state_dict().items(), watched.state_dict().items()):
        assert torch.equal(a, b), name


def test_default_probe_is_the_first_validation_samples_then_training(trainer_kwargs):
    x, y = _data(64)
    xv, yv = _data(50, seed=1)
    cb = KernelDistance(num_samples=20)
    trainer = pl.Trainer(max_epochs=1, num_sanity_val_steps=0, callbacks=[cb], **trainer_kwargs)
    trainer.fit(Regression(_two_layer()), _loader(x, y, shuffle=True), _loader(xv, yv))
    assert torch.equal(cb.probe, xv[:20])
    cb = KernelDistance(num_samples=100)
    trainer = pl.Trainer(max_epochs=1, callbacks=[cb], **trainer_kwargs)
    trainer.fit(Regression(_two_layer()), _loader(x, y, shuffle=True))
    assert torch.equal(cb.probe, x)  # the first samples of the dataset, not of a shuffled batch


def test_state_dict_round_trip_and_resume_keep_the_initial_reference(tmp_path, trainer_kwargs):
    from lightning.pytorch.callbacks import ModelCheckpoint

    x, y = _data(64)
    pl.seed_everything(0, verbose=False)
    cb = KernelDistance(relu_sites="net.1", two_layer=[("net.0", "net.2")])
    ckpt = ModelCheckpoint(dirpath=tmp_path, save_last=True)
    trainer = pl.Trainer(max_epochs=2, callbacks=[cb, ckpt], **{**trainer_kwargs, "enable_checkpointing": True})
    trainer.fit(Regression(_two_layer(act=nn.ReLU)), _loader(x, y), _loader(x, y))
    buf = io.BytesIO()
    torch.save(cb.state_dict(), buf)
    buf.seek(0)
    copy = KernelDistance(relu_sites="net.1", two_layer=[("net.0", "net.2")])
    copy.load_state_dict(torch.load(buf, weights_only=True))
    assert torch.equal(copy.kernel0, cb.kernel0) and torch.equal(copy.probe, cb.probe)
    assert all(torch.equal(copy.theta0[k], v) for k, v in cb.theta0.items()) and copy.theta0.keys() == cb.theta0.keys()
    assert copy.history == cb.history and copy.lrs == cb.lrs
    resumed = KernelDistance(relu_sites="net.1", two_layer=[("net.0", "net.2")])
    trainer = pl.Trainer(max_epochs=4, callbacks=[resumed, ModelCheckpoint(dirpath=tmp_path / "2")],
                         **{**trainer_kwargs, "enable_checkpointing": True})
    trainer.fit(Regression(_two_layer(act=nn.ReLU)), _loader(x, y), _loader(x, y),
                ckpt_path=str(tmp_path / "last.ckpt"))
    assert torch.equal(resumed.kernel0, cb.kernel0)
    assert resumed.history["step"] == [0, 4, 8, 12, 16]
    assert resumed.history["ntk/param_distance"][:3] == cb.history["ntk/param_distance"]


def test_history_figure_goes_to_tensorboard_and_renders(tmp_path, trainer_kwargs):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    x, y = _data(64)
    pl.seed_everything(0, verbose=False)
    cb = KernelDistance(every_n_steps=2, relu_sites="net.1", two_layer=[("net.0", "net.2")])
    logger = pl.loggers.TensorBoardLogger(tmp_path, name="tb")
    trainer = pl.Trainer(max_epochs=3, callbacks=[cb], log_every_n_steps=1, **{**trainer_kwargs, "logger": logger})
    trainer.fit(Regression(_two_layer(act=nn.ReLU)), _loader(x, y))
    acc = EventAccumulator(logger.log_dir)
    acc.Reload()
    assert "ntk/history" in acc.Tags()["images"]
    assert {"ntk/kernel_distance", "ntk/param_distance", "ntk/net.1/activation_hamming",
            "ntk/net.0/delta_mean"} <= set(acc.Tags()["scalars"])
    fig = cb.figure()
    assert len(fig.axes) == 4
    fig.savefig(tmp_path / "ntk_history.png")
    assert (tmp_path / "ntk_history.png").stat().st_size > 10_000
