import copy

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import DataLoader, RandomSampler

from lit_repr.data import DigitsDataModule
from lit_repr.federated.baselines import (
    ProximalTerm,
    accuracy,
    average_states,
    centralized,
    derive_seed,
    fedavg,
    fedprox,
    local_update,
    parameter_distance,
)
from lit_repr.federated.partition import Partition, classes_per_client, dirichlet, silos
from lit_repr.models import Classifier

CLF = {"num_classes": 10, "in_features": 64, "hidden": [32], "lr": 1e-2}


@pytest.fixture(scope="module")
def digits():
    s = DigitsDataModule(val_fraction=0.0, test_fraction=0.3, seed=0).build_splits()
    return s["train"]["x"], s["train"]["y"], s["test"]["x"], s["test"]["y"]


@pytest.fixture(scope="module")
def small():
    """200 digits and a split into two unequal, label-skewed clients."""
    s = DigitsDataModule(val_fraction=0.0, test_fraction=0.0, seed=0).build_splits()
    x, y = s["train"]["x"][:200], s["train"]["y"][:200]
    low = np.flatnonzero(y.numpy() < 4)
    return x, y, (low, np.setdiff1d(np.arange(200), low))


def same_state(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# ------------------------------------------------------------------------------------ averaging
def test_average_of_identical_states_is_the_state_bit_for_bit():
    model = Classifier(num_classes=3, in_features=5, hidden=[7], batch_norm=True)
    state = model.state_dict()
    avg = average_states([state, copy.deepcopy(state), copy.deepcopy(state)], [5, 1, 17])
    assert all(torch.equal(avg[k], state[k]) and avg[k].dtype == state[k].dtype for k in state)


def test_average_weights_by_counts_and_rounds_integer_buffers():
    a = {"w": torch.tensor([1.0, 2.0]), "n": torch.tensor(10), "h": torch.tensor([1.0], dtype=torch.float16)}
    b = {"w": torch.tensor([5.0, -2.0]), "n": torch.tensor(21), "h": torch.tensor([3.0], dtype=torch.float16)}
    avg = average_states([a, b], [3, 1])
    torch.testing.assert_close(avg["w"], torch.tensor([2.0, 1.0]), rtol=0, atol=0)
    assert avg["n"].dtype == torch.int64 and int(avg["n"]) == 13  # (3 * 10 + 21) / 4 = 12.75
    assert avg["h"].dtype == torch.float16 and float(avg["h"]) == 1.5
    # a zero weight leaves a state out entirely
    assert torch.equal(average_states([a, b], [0, 2])["w"], b["w"])


@pytest.mark.parametrize(
    "states,weights,match",
    [
        ([], [], "non-empty"),
        ([{"w": torch.ones(2)}], [1, 2], "one weight per state"),
        ([{"w": torch.ones(2)}, {"w": torch.ones(2)}], [0, 0], "not all be zero"),
        ([{"w": torch.ones(2)}, {"w": torch.ones(2)}], [1, -1], r"weights\[1\]"),
        ([{"w": torch.ones(2)}, {"v": torch.ones(2)}], [1, 1], "missing \\['w'\\], extra \\['v'\\]"),
        ([{"w": torch.ones(2)}, {"w": torch.ones(3)}], [1, 1], "shape \\(2,\\)"),
        ([{"w": torch.ones(2)}, {"w": torch.ones(2, dtype=torch.float64)}], [1, 1], "dtype torch.float32"),
        ([{"m": torch.tensor([True])}, {"m": torch.tensor([False])}], [1, 1], "boolean entry 'm'"),
    ],
)
def test_average_states_rejects_bad_input(states, weights, match):
    with pytest.raises(ValueError, match=match):
        average_states(states, weights)


# ------------------------------------------------------------------------------------ FedAvg
def test_fedavg_with_one_client_and_one_round_is_centralized_training_bit_for_bit(small):
    x, y, _ = small
    everyone = (np.arange(len(y)),)
    fed = fedavg(x, y, everyone, rounds=1, local_epochs=2, classifier=CLF, seed=3, batch_size=32)
    cen = centralized(x, y, epochs=2, classifier=CLF, seed=3, batch_size=32)
    torch.manual_seed(3)
    init = Classifier(**CLF)
    assert same_state(fed, cen)
    assert not same_state(fed, init)  # it did train


def test_fedavg_with_one_client_is_plain_lightning_training(small, trainer_kwargs):
    """The local run is an ordinary Trainer.fit over a shuffled DataLoader: written here from scratch."""
    x, y, _ = small
    fed = fedavg(x, y, [np.arange(len(y))], rounds=1, local_epochs=2, classifier=CLF, seed=4, batch_size=32)
    torch.manual_seed(4)
    plain = Classifier(**CLF)
    rows = [{"x": a, "y": b} for a, b in zip(x, y)]
    shuffle = RandomSampler(rows, generator=torch.Generator().manual_seed(derive_seed(4, 0, 0)))
    loader = DataLoader(rows, batch_size=32, sampler=shuffle)
    torch.manual_seed(derive_seed(4, 0, 0))
    pl.Trainer(max_epochs=2, **trainer_kwargs).fit(plain, loader)
    assert same_state(fed, plain)


def test_fedavg_round_is_the_count_weighted_average_of_local_updates(small):
    """One round of fedavg, recomputed by hand from its documented parts (BatchNorm buffers included)."""
    x, y, shards = small
    clf = {**CLF, "batch_norm": True}
    fed = fedavg(x, y, shards, rounds=1, local_epochs=1, classifier=clf, seed=1, batch_size=16)
    torch.manual_seed(1)
    start = Classifier(**clf)
    states, counts = [], []
    for c, idx in enumerate(shards):
        local = copy.deepcopy(start)
        local_update(local, x[idx], y[idx], epochs=1, seed=derive_seed(1, 0, c), batch_size=16)
        states.append(local.state_dict())
        counts.append(len(idx))
    expected = average_states(states, counts)
    got = fed.state_dict()
    assert all(torch.equal(got[k], expected[k]) for k in expected)
    # num_batches_tracked: the rounded count-weighted mean of the clients' batch counts
    batches = [int(np.ceil(n / 16)) for n in counts]
    mean = (batches[0] * counts[0] + batches[1] * counts[1]) / sum(counts)
    assert int(got["backbone.0.1.num_batches_tracked"]) == round(mean)
    assert not torch.equal(got["backbone.0.1.running_mean"], start.state_dict()["backbone.0.1.running_mean"])


def test_fedavg_is_deterministic_per_seed_and_leaves_the_callers_rng_alone(small):
    x, y, shards = small
    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    a = fedavg(x, y, shards, rounds=2, local_epochs=1, classifier=CLF, seed=5)
    after = torch.rand(3)
    b = fedavg(x, y, shards, rounds=2, local_epochs=1, classifier=CLF, seed=5)
    c = fedavg(x, y, shards, rounds=2, local_epochs=1, classifier=CLF, seed=6)
    assert torch.equal(before, after)
    assert same_state(a, b) and not same_state(a, c)
    assert not a.training  # returned in eval mode


def test_fedavg_accepts_a_partition_and_skips_empty_clients(small):
    x, y, shards = small
    empty = np.array([], dtype=np.int64)
    with_empty = fedavg(x, y, (shards[0], empty, shards[1]), rounds=1, local_epochs=1, classifier=CLF, seed=0)
    assert 0 <= accuracy(with_empty, x, y) <= 1
    part = Partition(tuple(shards), num_classes=10)
    a = fedavg(x, y, part, rounds=1, local_epochs=1, classifier=CLF, seed=0)
    b = fedavg(x, y, shards, rounds=1, local_epochs=1, classifier=CLF, seed=0)
    assert same_state(a, b)


# ------------------------------------------------------------------------------------ FedProx
def test_fedprox_with_mu_zero_is_fedavg_bit_for_bit(small):
    x, y, shards = small
    a = fedprox(x, y, shards, rounds=2, local_epochs=1, classifier=CLF, seed=2, mu=0.0)
    b = fedavg(x, y, shards, rounds=2, local_epochs=1, classifier=CLF, seed=2)
    c = fedprox(x, y, shards, rounds=2, local_epochs=1, classifier=CLF, seed=2)  # default mu = 0.01
    assert same_state(a, b) and not same_state(a, c)


class _ExplicitProx(Classifier):
    """FedProx written into the loss, as a reference for the callback."""

    def __init__(self, mu, **kw):
        super().__init__(**kw)
        self.mu = mu

    def on_fit_start(self):
        self.ref = [p.detach().clone() for p in self.parameters()]

    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        return loss + self.mu / 2 * sum((p - r).pow(2).sum() for p, r in zip(self.parameters(), self.ref))


def test_proximal_term_callback_equals_the_proximal_loss(small, trainer_kwargs):
    x, y, _ = small
    data = [{"x": a, "y": b} for a, b in zip(x[:64], y[:64])]
    kw = {**CLF, "weight_decay": 0.0}
    results = []
    for model, callbacks in (
        (_ExplicitProx(0.5, **kw), []),
        (Classifier(**kw), [ProximalTerm(0.5)]),
        (Classifier(**kw), []),
    ):
        torch.manual_seed(0)
        model.load_state_dict(Classifier(**kw).state_dict())
        trainer = pl.Trainer(max_epochs=3, callbacks=callbacks, **trainer_kwargs)
        trainer.fit(model, DataLoader(data, batch_size=16))
        results.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    torch.testing.assert_close(results[1], results[0], rtol=1e-5, atol=1e-6)
    assert not torch.allclose(results[2], results[0], atol=1e-4)  # the term matters


def test_proximal_term_keeps_clients_closer_to_the_global_model(digits):
    x, y, _, _ = digits
    one_class = np.flatnonzero(y.numpy() == 3)  # the most drifting client: a silo
    torch.manual_seed(0)
    start = Classifier(**CLF)
    drift = {}
    for mu in (0.0, 0.1, 1.0):
        local = copy.deepcopy(start)
        stats = local_update(local, x[one_class], y[one_class], epochs=3, seed=0, mu=mu)
        drift[mu] = stats["drift"]
        ref = {n: p.detach() for n, p in start.named_parameters()}
        assert stats["drift"] == pytest.approx(parameter_distance(local, ref))
    assert drift[0.0] > drift[0.1] > drift[1.0] > 0
    assert drift[1.0] < 0.8 * drift[0.0]


def test_fedprox_logs_rounds_to_the_logger(small, tmp_path):
    x, y, shards = small
    logger = CSVLogger(tmp_path, name="fed")
    fedprox(x, y, shards, rounds=3, local_epochs=1, classifier=CLF, seed=0, mu=0.1, logger=logger, val=(x, y))
    import csv

    rows = list(csv.DictReader(open(logger.log_dir + "/metrics.csv")))
    assert [int(r["step"]) for r in rows] == [0, 1, 2]
    assert {"fedprox/drift", "fedprox/train_acc", "fedprox/train_loss", "fedprox/val_acc"} <= set(rows[0])
    assert all(float(r["fedprox/drift"]) > 0 for r in rows)
    assert float(rows[-1]["fedprox/val_acc"]) > float(rows[0]["fedprox/val_acc"])


# ------------------------------------------------------------------------------------ digits
def test_digits_iid_reaches_centralized_and_silos_collapse(digits):
    """FedAvg on an IID split is close to centralized training; with one class per client it collapses."""
    xtr, ytr, xte, yte = digits
    kw = dict(rounds=5, local_epochs=2, classifier={**CLF, "hidden": [64]}, seed=0)
    central = accuracy(centralized(xtr, ytr, epochs=10, classifier=kw["classifier"], seed=0), xte, yte)
    iid = accuracy(fedavg(xtr, ytr, dirichlet(ytr, 5, alpha=100.0, seed=0), **kw), xte, yte)
    collapsed = accuracy(fedavg(xtr, ytr, silos(ytr), **kw), xte, yte)
    assert central > 0.93
    assert iid > central - 0.08
    assert collapsed < 0.35 and collapsed < central - 0.5


# ------------------------------------------------------------------------------------ arguments
def _call(fn, x, y, shards, **kw):
    args = dict(rounds=1, local_epochs=1, classifier=CLF, seed=0)
    args.update(kw)
    if fn is centralized:
        args.pop("rounds"), args.pop("local_epochs")
        args.setdefault("epochs", 1)
        return centralized(x, y, **args)
    return fn(x, y, shards, **args)


@pytest.mark.parametrize(
    "kw,match",
    [
        ({"rounds": 0}, "rounds must be a positive int, got 0"),
        ({"local_epochs": 1.5}, "local_epochs must be a positive int"),
        ({"mu": -0.1}, "mu must be a finite number >= 0"),
        ({"mu": float("nan")}, "mu must be a finite number"),
        ({"seed": -1}, "seed must be a non-negative int"),
        ({"batch_size": 0}, "batch_size"),
        ({"classifier": "mlp"}, "classifier must be a dict"),
        ({"classifier": {**CLF, "in_features": 10}}, "do not fit the classifier"),
        ({"classifier": {**CLF, "num_classes": 3}}, r"labels must be class indices in \[0, 3\)"),
        ({"classifier": {**CLF, "task": "multilabel"}}, "task must be 'multiclass'"),
        ({"lr": 0.5}, "lr is given twice"),
        ({"trainer_kwargs": {"max_epochs": 3}}, r"may not set \['max_epochs'\]"),
        ({"val": (torch.rand(4, 64),)}, "val must be None or a pair"),
    ],
)
def test_bad_arguments_raise_before_training(small, kw, match):
    x, y, shards = small
    with pytest.raises(ValueError, match=match):
        _call(fedavg, x, y, shards, **kw)


def test_bad_partitions_and_data_raise(small):
    x, y, (a, b) = small
    with pytest.raises(ValueError, match="must be disjoint"):
        _call(fedavg, x, y, (a, np.concatenate([b, a[:1]])))
    with pytest.raises(ValueError, match="must cover the data: 1 of 200"):
        _call(fedavg, x, y, (a, b[1:]))
    with pytest.raises(ValueError, match=r"indices outside \[0, 200\)"):
        _call(fedavg, x, y, (a, np.append(b, 200)))
    with pytest.raises(ValueError, match="partition must be a Partition or a non-empty sequence"):
        _call(fedavg, x, y, np.arange(200))
    with pytest.raises(ValueError, match="integer sample indices"):
        _call(fedavg, x, y, (a.astype(float), b))
    with pytest.raises(ValueError, match="images and labels must have the same length"):
        _call(fedavg, x[:-1], y, (a, b))
    with pytest.raises(ValueError, match="images must be finite"):
        _call(centralized, torch.full_like(x, float("nan")), y, None)
    with pytest.raises(ValueError, match="labels must be a 1-D integer tensor"):
        _call(centralized, x, y.float(), None)
    with pytest.raises(ValueError, match="epochs must be a positive int"):
        _call(centralized, x, y, None, epochs=0)
    with pytest.raises(ValueError, match="partition has 12 classes but the classifier only 10"):
        _call(fedavg, x, y, Partition((a, b), num_classes=12))


def test_local_update_and_proximal_term_check_arguments(small):
    x, y, _ = small
    with pytest.raises(ValueError, match="mu must be a finite number >= 0"):
        ProximalTerm(-1)
    with pytest.raises(ValueError, match="model must be a lit_repr Classifier"):
        local_update(torch.nn.Linear(64, 10), x, y, epochs=1, seed=0)
    model = Classifier(**CLF)
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(ValueError, match="trainer_kwargs may not set \\['logger'\\]"):
        local_update(model, x, y, epochs=1, seed=0, trainer_kwargs={"logger": False})
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.slow
def test_digits_table_over_partitions_and_seeds(digits, capsys):
    """The table of the module docstring: test accuracy over three seeds, centralized vs FedAvg / FedProx."""
    xtr, ytr, xte, yte = digits
    clf = {**CLF, "hidden": [64]}
    parts = {
        "IID (5 clients, dirichlet a=100)": dirichlet(ytr, 5, alpha=100.0, seed=0),
        "2 classes per client (5 clients)": classes_per_client(ytr, 5, 2, seed=0),
        "10 silos (1 class per client)": silos(ytr),
    }
    central_models = [centralized(xtr, ytr, epochs=10, classifier=clf, seed=s) for s in range(3)]
    acc = {"centralized": [accuracy(m, xte, yte) for m in central_models]}
    for name, part in parts.items():
        for mu in (0.0, 0.1):
            acc[("FedAvg" if mu == 0 else f"FedProx mu={mu}") + " " + name] = [
                accuracy(fedavg(xtr, ytr, part, rounds=5, local_epochs=2, classifier=clf, seed=s, mu=mu), xte, yte)
                for s in range(3)
            ]
    with capsys.disabled():
        for name, values in acc.items():
            print(f"{name:<48s} {np.mean(values):.3f} ({min(values):.3f}..{max(values):.3f})")
    central = np.mean(acc["centralized"])
    assert np.mean(acc["FedAvg IID (5 clients, dirichlet a=100)"]) > central - 0.06
    assert np.mean(acc["FedAvg 10 silos (1 class per client)"]) < 0.2
    assert np.mean(acc["FedProx mu=0.1 2 classes per client (5 clients)"]) > np.mean(
        acc["FedAvg 2 classes per client (5 clients)"]
    )
