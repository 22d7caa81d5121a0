import math

import pytest
import torch

from lit_repr.federated.engine import ClientTask, client_step
from lit_repr.federated.exchange import ExchangeError, ModulePayload
from lit_repr.federated.server import FederatedServer, predict_proba

NUM_CLASSES = 4
TRAINER = {"max_epochs": 10}
CLASSIFIER = {"hidden": [16], "lr": 0.01}


def make_data(n_per_class=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(NUM_CLASSES).repeat_interleave(n_per_class)
    centres = torch.rand(NUM_CLASSES, 1, 4, 4, generator=torch.Generator().manual_seed(99))
    images = (centres[labels] + 0.05 * torch.randn(len(labels), 1, 4, 4, generator=g)).clamp(0, 1)
    return images, labels


def silo_payloads(images, labels, clients=range(NUM_CLASSES), seed=0):
    """Client c holds class c."""
    out = []
    for c in clients:
        out += client_step(ClientTask(client=c, prior="pixel", seed=seed), images[labels == c], labels[labels == c])
    return out


def server(**kw):
    return FederatedServer(NUM_CLASSES, classifier=CLASSIFIER, trainer=TRAINER, samples_per_class=20, progress=False,
                           **kw)


@pytest.fixture
def split(pixel_prior):
    return make_data(seed=0), make_data(n_per_class=10, seed=1)


def test_receive_is_all_or_nothing(split):
    (x, y), _ = split
    payloads = silo_payloads(x, y)
    s = server()
    s.receive(payloads[:2])
    assert s.clients() == [0, 1]
    before = dict(s.modules)
    bad = ModulePayload({**payloads[3].manifest, "sha256": "0" * 64}, payloads[3].data)
    with pytest.raises(ExchangeError, match="client 3, class 3: sha256 mismatch"):
        s.receive([payloads[2], bad])
    assert s.modules == before  # payload 2 was fine but is not stored either
    with pytest.raises(ExchangeError, match="client 1, class 1: received twice"):
        s.receive([payloads[2], payloads[1]])
    assert s.modules == before
    s.receive(payloads[2:])
    assert s.classes() == [0, 1, 2, 3] and s.missing_classes() == []


def test_receive_rejects_class_out_of_range_and_other_shapes(split, pixel_prior):
    (x, y), _ = split
    payloads = silo_payloads(x, y)
    with pytest.raises(ExchangeError, match="class 3 is outside"):
        FederatedServer(3, progress=False).receive(payloads)
    other = client_step(ClientTask(client=9, prior="pixel"), torch.rand(4, 1, 2, 2), torch.zeros(4, dtype=torch.long))
    s = server()
    with pytest.raises(ExchangeError, match=r"client 9, class 0: image shape \(1, 2, 2\) differs"):
        s.receive(payloads + other)
    assert s.modules == {} and s.image_shape is None


def test_synthesis_is_balanced_reproducible_and_order_independent(split):
    (x, y), _ = split
    payloads = silo_payloads(x, y)
    a, b = server(), server()
    a.receive(payloads)
    b.receive(payloads[::-1])
    xa, ya = a.synthesize()
    xb, yb = b.synthesize()
    assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert torch.bincount(ya).tolist() == [20] * NUM_CLASSES
    # two clients sharing a class split its count
    extra = client_step(ClientTask(client=7, prior="pixel"), x[y == 0], y[y == 0])
    a.receive(extra)
    _, ya = a.synthesize()
    assert torch.bincount(ya).tolist() == [20] * NUM_CLASSES


def test_server_mode_learns_from_modules_alone(split):
    (x, y), (tx, ty) = split
    s = server()
    s.receive(silo_payloads(x, y))
    r = s.run(tx, ty, modes=["server"])
    assert r["server"]["accuracy"] > 0.9
    assert r["missing_classes"] == []
    assert set(r["timings"]) >= {"verify", "synthesis", "classifier", "evaluation"}


def test_class_held_by_no_client_is_reported_and_marked(split):
    (x, y), (tx, ty) = split
    s = server()
    s.receive(silo_payloads(x, y, clients=[0, 1, 2]))
    r = s.run(tx, ty, modes=["server"])
    assert r["missing_classes"] == [3] and r["server"]["missing_classes"] == [3]
    per = r["server"]["per_class_accuracy"]
    assert math.isnan(per[3]) and all(not math.isnan(v) for v in per[:3])
    assert r["server"]["accuracy"] < 0.8  # the missing class's test images are errors, not dropped


def test_local_mode_is_a_product_of_experts(split):
    (x, y), (tx, ty) = split
    s = server()
    s.receive(silo_payloads(x, y))
    data = {c: (x[y == c], y[y == c]) for c in range(NUM_CLASSES)}
    r = s.run(tx, ty, modes=["server", "local"], client_data=data)
    assert len(s.models["local"]) == NUM_CLASSES
    assert r["local"]["accuracy"] > 0.9
    logp = sum(m(tx.flatten(1)).log_softmax(-1) for m in s.models["local"])
    assert torch.allclose(predict_proba(s.models["local"], tx, CLASSIFIER), logp.softmax(-1), atol=1e-6)
    with pytest.raises(ValueError, match="needs client_data"):
        s.run(tx, ty, modes=["local"])


def test_run_checks_arguments(split):
    (x, y), (tx, ty) = split
    s = server()
    with pytest.raises(ValueError, match="no modules received"):
        s.run(tx, ty)
    s.receive(silo_payloads(x, y))
    with pytest.raises(ValueError, match="modes must be"):
        s.run(tx, ty, modes=["global"])
    with pytest.raises(ValueError, match="test_images have shape"):
        s.run(torch.rand(3, 1, 2, 2), ty[:3])
    with pytest.raises(ValueError, match="must not set 'num_classes'"):
        FederatedServer(4, classifier={"num_classes": 3})


def state_equal(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_unlearning_a_client_is_exact(split):
    (x, y), (tx, ty) = split
    data = {c: (x[y == c], y[y == c]) for c in range(NUM_CLASSES)}
    s = server()
    s.receive(silo_payloads(x, y))
    s.run(tx, ty, modes=["server", "local"], client_data=data)
    out = s.unlearn(client=2)
    assert out["removed"] == [[2, 2]] and out["forgotten_classes"] == [2]
    assert out["before"]["server"] > 0.8 and out["after"]["server"] == 0.0
    assert math.isnan(out["results"]["server"]["per_class_accuracy"][2])

    never = server()
    never.receive(silo_payloads(x, y, clients=[0, 1, 3]))
    never.run(tx, ty, modes=["server", "local"], client_data={c: d for c, d in data.items() if c != 2})
    assert state_equal(s.models["server"], never.models["server"])
    assert len(s.models["local"]) == len(never.models["local"]) == 3
    assert all(state_equal(a, b) for a, b in zip(s.models["local"], never.models["local"]))
    assert str(out["results"]["server"]) == str(never.results["server"])  # NaN-aware equality


def test_unlearning_a_class_and_bad_requests(split):
    (x, y), (tx, ty) = split
    s = server()
    payloads = silo_payloads(x, y)
    s.receive(payloads)
    with pytest.raises(ValueError, match="call run"):
        s.unlearn(client=0)
    s.run(tx, ty)
    with pytest.raises(ValueError, match=r"no module matches client=8"):
        s.unlearn(client=8)
    with pytest.raises(ValueError, match="client=..., cls=..."):
        s.unlearn()
    assert len(s.modules) == 4
    out = s.unlearn(cls=1)
    assert out["removed"] == [[1, 1]] and s.missing_classes() == [1]
    never = server()
    never.receive([p for p in payloads if p.cls != 1])
    never.run(tx, ty)
    assert state_equal(s.models["server"], never.models["server"])


def test_gmm_on_digit_silos_unlearning_equals_never_having_the_client(tmp_path):
    """The real pipeline (gmm priors, exchange through files) on digits: exact unlearning of a client."""
    import numpy as np

    from lit_repr.data.digits import DigitsDataModule
    from lit_repr.federated.engine import LocalEngine
    from lit_repr.federated.partition import Partition, silos

    dm = DigitsDataModule(layout="image", seed=0)
    dm.setup("fit")
    x, y = dm.arrays("train")
    tx, ty = dm.arrays("val")
    part = silos(y.numpy())
    prior_config = {"num_components": 2, "num_pca_components": 6}
    kw = dict(prior="gmm", prior_config=prior_config, trainer={"max_epochs": 5}, seed=3, progress=False)

    def federation(partition, payload_dir):
        engine = LocalEngine(x, y, partition, payload_dir=str(payload_dir), **kw)
        s = FederatedServer(10, classifier={"hidden": [32], "lr": 0.01}, trainer={"max_epochs": 15},
                            samples_per_class=30, seed=3, progress=False)
        s.receive(engine.run_clients())
        s.run(tx, ty, modes=["server"])
        return s

    full = federation(part, tmp_path / "all")
    assert full.results["server"]["accuracy"] > 0.6
    out = full.unlearn(client=4)
    assert out["forgotten_classes"] == [4] and out["after"]["server"] == 0.0 < out["before"]["server"]
    without = Partition(tuple(idx if c != 4 else np.array([], dtype=np.int64) for c, idx in enumerate(part.indices)),
                        num_classes=10)
    never = federation(without, tmp_path / "without")
    assert state_equal(full.models["server"], never.models["server"])
