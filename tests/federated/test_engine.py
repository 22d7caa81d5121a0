import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from lit_repr.federated.engine import ClientTask, LocalEngine, client_step, module_seed
from lit_repr.federated.exchange import verify


def data(n=30, classes=(0, 1, 2), seed=0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.tensor([classes[i % len(classes)] for i in range(n)])
    images = (torch.rand(n, 1, 4, 4, generator=g) * 0.5 + labels.view(-1, 1, 1, 1) * 0.2).clamp(0, 1)
    return images, labels


def test_task_json_round_trip_and_checks():
    task = ClientTask(client=1, prior="pixel", prior_config={"shrink": 0.1}, trainer={"max_epochs": 2}, seed=3,
                      classes=(2, 0))
    assert task.classes == (0, 2)
    assert ClientTask.from_dict(json.loads(json.dumps(task.to_dict()))) == task
    with pytest.raises(ValueError, match="client must be an int >= 0"):
        ClientTask(client=-1, prior="pixel")
    with pytest.raises(ValueError, match="JSON"):
        ClientTask(client=0, prior="pixel", trainer={"callbacks": object()})
    with pytest.raises(ValueError, match="image_shape"):
        ClientTask(client=0, prior="pixel", prior_config={"image_shape": [1, 2, 2]})
    with pytest.raises(ValueError, match="unknown ClientTask keys"):
        ClientTask.from_dict({"client": 0, "prior": "pixel", "rounds": 3})
    with pytest.raises(ValueError, match="distinct"):
        ClientTask(client=0, prior="pixel", classes=(1, 1))


def test_module_seed_is_stable_and_separates_parts():
    assert module_seed(0, 1, 2) == 225124893  # fixed across processes and versions
    seeds = {module_seed(s, c, k) for s in range(2) for c in range(5) for k in range(5)}
    assert len(seeds) == 50


def test_client_step_one_payload_per_class_seeded_per_class(pixel_prior):
    images, labels = data()
    task = ClientTask(client=4, prior="pixel", seed=7)
    payloads = client_step(task, images, labels)
    assert [(p.client, p.cls) for p in payloads] == [(4, 0), (4, 1), (4, 2)]
    prior = verify(payloads[1])
    ref = pixel_prior((1, 4, 4)).fit_data(images[labels == 1], seed=module_seed(7, 4, 1))
    assert torch.equal(prior.mean, ref.mean)
    # a module depends only on its own (client, class) data and seed: a client holding less gives the same module
    only = client_step(task, images[labels == 1], labels[labels == 1])
    assert only[0].data == payloads[1].data


def test_client_step_class_without_data(pixel_prior):
    images, labels = data(classes=(0, 1))
    with pytest.raises(ValueError, match=r"client 2 is asked for class\(es\) \[5\] but holds no data"):
        client_step(ClientTask(client=2, prior="pixel", classes=(0, 5)), images, labels)


def test_client_step_bad_input(pixel_prior):
    images, labels = data()
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        client_step(ClientTask(0, "pixel"), images * 3, labels)
    with pytest.raises(ValueError, match="differ in length"):
        client_step(ClientTask(0, "pixel"), images, labels[:-1])
    with pytest.raises(ValueError, match="unknown prior kind 'flow'"):
        client_step(ClientTask(0, "flow"), images, labels)
    with pytest.raises(ValueError, match="shrink"):
        client_step(ClientTask(0, "pixel", {"shrink": -1.0}), images, labels)


def test_local_engine_runs_clients_through_the_disk(pixel_prior, tmp_path):
    images, labels = data(n=40, classes=(0, 1, 2, 3))
    part = SimpleNamespace(indices=(np.where(labels.numpy() < 2)[0], np.array([], dtype=int),
                                    np.where(labels.numpy() >= 2)[0]), num_classes=4)
    engine = LocalEngine(images, labels, part, prior="pixel", seed=1, payload_dir=str(tmp_path / "m"), progress=False)
    assert [(t.client, t.classes) for t in engine.tasks()] == [(0, (0, 1)), (2, (2, 3))]
    payloads = engine.run_clients()
    assert [(p.client, p.cls) for p in payloads] == [(0, 0), (0, 1), (2, 2), (2, 3)]
    assert sorted(f.name for f in (tmp_path / "m").iterdir())[:2] == ["0_0.json", "0_0.safetensors"]
    assert set(engine.timings) == {"client_training", "transfer"}
    # removing client 0 changes no module of client 2
    again = engine.run_clients(clients=[2])
    assert [p.data for p in again] == [p.data for p in payloads[2:]]


def test_local_engine_checks_partition(pixel_prior):
    images, labels = data()
    with pytest.raises(ValueError, match="partition indices of client 0"):
        LocalEngine(images, labels, SimpleNamespace(indices=(np.array([0, 99]),)), prior="pixel")
