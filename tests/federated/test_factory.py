import json
import math
from pathlib import Path

import pytest

from lit_repr.data.digits import DigitsDataModule
from lit_repr.federated.factory import FederatedFactory

REPO = Path(__file__).resolve().parents[2]


def small(tmp_path, **kw):
    args = dict(
        data=DigitsDataModule(layout="image", val_fraction=0.0, test_fraction=0.2),
        prior_config={"num_components": 2, "num_pca_components": 8},
        prior_trainer={"max_epochs": 5},
        classifier={"hidden": [32], "lr": 0.01},
        classifier_trainer={"max_epochs": 8},
        samples_per_class=40,
        run_dir=str(tmp_path / "run"),
        progress=False,
    )
    args.update(kw)
    return FederatedFactory(**args)


def test_pipeline_report_table_and_unlearning(tmp_path, capsys):
    factory = small(tmp_path, modes=["server"], baselines=["centralized"], baseline_args={"epochs": 3},
                    partition="classes_per_client", partition_args={"num_clients": 5, "k": 2},
                    unlearn={"client": 1})
    report = factory.run()
    out = capsys.readouterr().out
    assert "client |" in out  # the partition table
    assert "FederatedFactory/server" in out and "centralized" in out and "wall time:" in out
    assert "unlearning {'client': 1}" in out
    saved = json.loads((tmp_path / "run" / "report.json").read_text())
    assert set(saved["methods"]) == {
        "FederatedFactory/server", "centralized", "FederatedFactory/server/after_unlearning"}
    assert report["methods"]["FederatedFactory/server"]["accuracy"] > 0.5
    assert set(saved["timings"]) >= {"partition", "client_training", "exchange", "synthesis", "classifier",
                                     "evaluation", "centralized", "unlearning"}
    assert saved["num_modules"] == 10 and len(list((tmp_path / "run" / "modules").glob("*.json"))) == 10
    forgotten = saved["unlearning"]["forgotten_classes"]
    assert len(forgotten) >= 1
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "run"))
    events.Reload()
    assert "prior/gmm/samples" in events.Tags()["images"]
    assert "federated/FederatedFactory/server/accuracy" in events.Tags()["scalars"]
    assert "federated/time/client_training" in events.Tags()["scalars"]


def test_class_held_by_no_client_is_reported(tmp_path, capsys, monkeypatch):
    """A partition that gives class 9 to nobody (its silo is empty): reported and marked, not an error."""
    import numpy as np

    from lit_repr.federated.partition import PARTITIONERS, Partition

    def without_class_9(labels, seed=0):
        p = PARTITIONERS["silos"](labels, seed=seed)
        return Partition(tuple(i if c != 9 else np.array([], dtype=np.int64) for c, i in enumerate(p.indices)), 10)

    monkeypatch.setitem(PARTITIONERS, "silos_but_9", without_class_9)
    report = small(tmp_path, partition="silos_but_9", modes=["server", "local"]).run()
    assert report["methods"]["FederatedFactory/local"]["missing_classes"] == [9]
    assert report["missing_classes"] == [9] and "held by no client" in report["cannot_synthesise"]
    assert math.isnan(report["methods"]["FederatedFactory/server"]["per_class_accuracy"][9])
    assert json.loads((tmp_path / "run" / "report.json").read_text())["methods"]["FederatedFactory/server"][
        "per_class_accuracy"][9] is None
    assert "held by no client" in capsys.readouterr().out


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"partition": "random"}, "partition must be one of"),
        ({"prior": "flow"}, "prior must be one of"),
        ({"modes": ["global"]}, "modes must be"),
        ({"baselines": ["scaffold"]}, "baselines must be"),
        ({"baseline_args": {"round": 3}}, "unknown keys"),
        ({"classifier": {"num_classes": 3}}, "must not set 'num_classes'"),
        ({"unlearn": {"clients": 1}}, "unlearn takes"),
        ({"partition_args": {"seed": 1}}, "must not set seed"),
        ({"data": object()}, "arrays"),
        ({"samples_per_class": 0}, "samples_per_class"),
    ],
)
def test_bad_arguments_fail_before_anything_is_written(tmp_path, kw, match):
    with pytest.raises(ValueError, match=match):
        small(tmp_path, **kw)
    assert not (tmp_path / "run").exists()


def test_flat_digits_are_refused_with_a_hint(tmp_path):
    with pytest.raises(ValueError, match="layout='image'"):
        small(tmp_path, data=DigitsDataModule()).run()


def test_command_line(tmp_path, capsys):
    from lit_repr.cli import main

    main(["federate", "--config", str(REPO / "configs" / "federated_digits.yaml"), "--modes=[server]",
          "--baselines=[]", "--unlearn=null", "--samples_per_class=10", "--prior_trainer={max_epochs: 2}",
          "--classifier_trainer={max_epochs: 1}", "--progress=false", f"--run_dir={tmp_path / 'cli'}"])
    assert "FederatedFactory/server" in capsys.readouterr().out
    assert (tmp_path / "cli" / "config.yaml").is_file() and (tmp_path / "cli" / "report.json").is_file()


@pytest.mark.slow
def test_bloodmnist_config_full_size(tmp_path):
    """The paper-scale config on the real BloodMNIST file (skipped without it)."""
    from lit_repr.cli import main

    root = REPO / "data" / "medmnist"
    if not (root / "bloodmnist.npz").is_file():
        pytest.skip(f"the official bloodmnist.npz is not in {root}")
    main(["federate", "--config", str(REPO / "configs" / "federated_bloodmnist.yaml"), f"--data.init_args.root={root}",
          f"--run_dir={tmp_path / 'blood'}", "--progress=false"])
    report = json.loads((tmp_path / "blood" / "report.json").read_text())
    assert report["methods"]["FederatedFactory/server"]["accuracy"] > report["methods"]["fedavg"]["accuracy"]
