"""The settings both apps read, and the client shards: the same partition the core's local engine is given."""

import dataclasses

import pytest
import torch
from lit_repr_flower import FlowerFederation, client_shard, load_splits
from lit_repr_flower.federation import partition

from lit_repr.federated.engine import LocalEngine


def test_run_config_round_trip_and_flower_types():
    fed = FlowerFederation(classes=4, partition_args={"num_clients": 6}, prior_config={"num_components": 2},
                           unlearn={"client": 1}, reply_timeout=30.0)
    flat = fed.to_run_config()
    assert all(isinstance(v, (str, int, float, bool)) for v in flat.values())  # what Flower's UserConfig holds
    assert flat["prior-config"] == '{"num_components": 2}' and flat["min-classes"] == ""
    assert FlowerFederation.from_run_config(flat) == fed
    assert FlowerFederation.from_run_config({"unlearn": '{"cls": 3}', "classes": 5}).unlearn == {"cls": 3}
    assert fed.num_clients == 6 and FlowerFederation(classes=4).num_clients == 4


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"partition": "ring"}, "partition must be one of"),
        ({"prior": "flow"}, "prior must be one of"),
        ({"prior_config": [1]}, "prior_config must be a dict"),
        ({"partition_args": {"seed": 1}}, "must not set \\['seed'\\]"),
        ({"partition_args": {"num_clients": 2}, "min_clients": 3}, "min_clients \\(3\\) must be <= the number of"),
        ({"classes": 3, "min_classes": 4}, "min_classes \\(4\\) must be <= classes"),
        ({"connect_timeout": 0}, "connect_timeout"),
        ({"unlearn": {"client": -1}}, "unlearn\\['client'\\]"),
        ({"unlearn": {"clients": 1}}, "unlearn takes 'client' and/or 'cls'"),
    ],
)
def test_bad_settings_name_the_field(kwargs, match):
    with pytest.raises(ValueError, match=match):
        FlowerFederation(**kwargs)


def test_unknown_run_config_key_lists_the_allowed_ones():
    with pytest.raises(ValueError, match="unknown run config key 'prior_cfg'.*'prior-config'"):
        FlowerFederation.from_run_config({"prior_cfg": "{}"})
    with pytest.raises(ValueError, match="must be JSON text"):
        FlowerFederation.from_run_config({"prior-config": "{num: 2}"})


def test_client_shards_are_the_local_engines_client_data(federation):
    x, y = load_splits(federation, ("train",))["train"]
    engine = LocalEngine(x, y, partition(federation, y), prior="gmm", progress=False)
    for client in range(4):
        cx, cy = client_shard(federation, client, num_partitions=4)
        ex, ey = engine.client_data(client)
        assert torch.equal(cx, ex) and torch.equal(cy, ey) and cy.unique().tolist() == [client]


def test_shard_checks_the_node_config(federation):
    with pytest.raises(ValueError, match="num-partitions=3 but the 'silos' partition has 4 clients"):
        client_shard(federation, 0, num_partitions=3)
    with pytest.raises(ValueError, match="partition-id 4 is outside"):
        client_shard(federation, 4)
    with pytest.raises(ValueError, match="neither a class of lit_repr.data"):
        load_splits(dataclasses.replace(federation, data="NoSuchDataModule"))


FACTORY_YAML = """\
data:
  class_path: DigitsDataModule
  init_args: {layout: image, test_fraction: 0.2, val_fraction: 0.0}
partition: silos
prior: gmm
prior_config: {num_components: 5, num_pca_components: 16}
prior_trainer: {max_epochs: 50}
classifier: {hidden: [128], lr: 0.003}
classifier_trainer: {max_epochs: 30}
modes: [server, local]
samples_per_class: 200
baselines: [fedavg, fedprox, centralized]
baseline_args: {rounds: 10, local_epochs: 2, mu: 0.01, epochs: 30}
unlearn: {client: 3}
seed: 0
run_dir: runs/federated_digits
"""


def test_a_core_factory_config_gives_the_same_federation(tmp_path):
    path = tmp_path / "federated_digits.yaml"
    path.write_text(FACTORY_YAML)
    fed = FlowerFederation.from_factory_config(path)
    assert (fed.data, fed.data_args["layout"], fed.partition) == ("DigitsDataModule", "image", "silos")
    assert fed.prior_config == {"num_components": 5, "num_pca_components": 16} and fed.unlearn == {"client": 3}
    assert fed.classifier_trainer == {"max_epochs": 30} and fed.run_dir == "runs/federated_digits"
    # under flwr run: the file gives the federation, the run config only the Flower-side keys
    run_config = {**FlowerFederation().to_run_config(), "config": str(path), "min-classes": 8, "seed": 5}
    assert FlowerFederation.from_run_config(run_config) == FlowerFederation.from_factory_config(path, min_classes=8)
    path.write_text(FACTORY_YAML + "rounds: 3\n")
    with pytest.raises(ValueError, match="unknown key 'rounds'"):
        FlowerFederation.from_factory_config(path)
    with pytest.raises(ValueError, match="is not a file"):
        FlowerFederation.from_factory_config(tmp_path / "nope.yaml")


@pytest.mark.parametrize("name", ["federated_digits.yaml", "federated_bloodmnist.yaml"])
def test_the_repositorys_factory_configs_are_read(name):
    from pathlib import Path

    path = Path(__file__).resolve().parents[3] / "configs" / name
    fed = FlowerFederation.from_factory_config(path)
    assert fed.prior == "gmm" and fed.partition == "silos" and fed.run_dir.startswith("runs/")
