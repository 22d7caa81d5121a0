"""The Flower simulation (Ray, one virtual SuperNode per client) against the core's local engine, failures,
tampered replies and unlearning through the plugin. Digits silos over 4 classes, GMM priors."""

import json

import pytest
import torch
from lit_repr_flower import FailingClient, FederationStopped, SlowClient, TamperedReply, load_splits, simulate
from lit_repr_flower.federation import partition

from lit_repr.federated.engine import LocalEngine
from lit_repr.federated.server import FederatedServer


def _local(fed, without=()):
    """The core's LocalEngine and FederatedServer on the same problem, in this process (its default threads;
    the ClientApps under Ray run with one thread each)."""
    splits = load_splits(fed)
    x, y = splits["train"]
    engine = LocalEngine(x, y, partition(fed, y), prior=fed.prior, prior_config=fed.prior_config,
                         trainer=fed.prior_trainer, seed=fed.seed, progress=False)
    payloads = engine.run_clients([c for c in range(4) if c not in without])
    server = FederatedServer(num_classes=4, classifier=fed.classifier, trainer=fed.classifier_trainer,
                             samples_per_class=fed.samples_per_class, seed=fed.seed, batch_size=fed.batch_size,
                             progress=False)
    server.receive(payloads)
    results = server.run(*splits["test"])
    return server, payloads, results


def _equal(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_simulation_equals_the_local_engine_bit_for_bit_and_unlearns_exactly(tmp_path, make_federation):
    fed = make_federation(unlearn={"client": 3})
    run = simulate(fed)
    report = json.loads(run.report_path.read_text())
    assert report["status"] == "completed" and report["engine"] == "flower" and report["failures"] == {}
    assert report["missing_classes"] == [] and sorted(report["clients"]) == ["0", "1", "2", "3"]
    assert (tmp_path / "run" / "classifier.safetensors").exists()
    assert len(list((tmp_path / "run" / "modules").glob("*.safetensors"))) == 4

    local, payloads, results = _local(fed)
    # the very same modules travelled (hash of each safetensors file), and the same classifier came out
    flower_hashes = {(c, k): m.manifest["sha256"] for c, k, m in _modules(tmp_path / "run" / "modules")}
    assert flower_hashes == {(p.client, p.cls): p.manifest["sha256"] for p in payloads}
    assert _equal(run.classifier_state, local.models["server"].state_dict())
    assert report["methods"]["FederatedFactory/server"]["accuracy"] == results["server"]["accuracy"]
    assert report["num_modules"] == 4 and report["partition"]["classes_per_client"] == {str(c): [c] for c in range(4)}

    # unlearning through the plugin = the core's unlearning = a federation that never had client 3
    local.unlearn(client=3)
    forgotten = run.server.models["server"].state_dict()
    assert _equal(forgotten, local.models["server"].state_dict())
    never, _, _ = _local(fed, without=(3,))
    assert _equal(forgotten, never.models["server"].state_dict())
    entry = report["unlearning"]
    assert entry["request"] == {"client": 3} and entry["removed"] == [[3, 3]] and entry["forgotten_classes"] == [3]
    assert entry["after"]["server"] == 0.0 < entry["before"]["server"]  # class 3 cannot be predicted any more
    assert report["methods"]["FederatedFactory/server/after_unlearning"]["per_class_accuracy"][3] is None
    assert (tmp_path / "run" / "classifier_after_unlearning.safetensors").exists()


def _modules(directory):
    from lit_repr.federated.exchange import load_payloads

    return [(p.client, p.cls, p) for p in load_payloads(directory)]


def test_failing_and_tampered_clients_are_reported_and_the_run_goes_on_above_the_minimum(tmp_path, make_federation):
    fed = make_federation(classes=5, min_classes=1, min_clients=1)  # 5 silos
    mods = [TamperedReply("hash", [0]), TamperedReply("shape", [1]), TamperedReply("bytes", [2]), FailingClient([3])]
    run = simulate(fed, mods=mods)
    report = json.loads(run.report_path.read_text())
    failures = report["failures"]
    assert sorted(failures) == ["0", "1", "2", "3"] and report["missing_classes"] == [0, 1, 2, 3]
    assert {c: f["classes"] for c, f in failures.items()} == {"0": [0], "1": [1], "2": [2], "3": [3]}
    assert "rejected" in failures["0"]["reason"] and "sha256 mismatch" in failures["0"]["reason"]
    assert "rejected" in failures["1"]["reason"] and "shape" in failures["1"]["reason"]
    assert "rejected" in failures["2"]["reason"] and "sha256 mismatch" in failures["2"]["reason"]
    assert failures["3"]["reason"] == "client 3 failed while fitting its modules (injected fault)"
    assert run.server.clients() == [4] and report["status"] == "completed without class(es) [0, 1, 2, 3]"
    server = report["methods"]["FederatedFactory/server"]
    assert server["missing_classes"] == [0, 1, 2, 3] and server["per_class_accuracy"][:4] == [None] * 4
    assert "cannot_synthesise" in report
    assert [c for c, _, _ in _modules(tmp_path / "run" / "modules")] == [4]  # nothing of a rejected reply is kept


def test_a_client_that_times_out_stops_the_run_below_the_minimum_and_names_its_classes(tmp_path, make_federation):
    fed = make_federation(reply_timeout=25.0)  # min_classes defaults to every class: no silent partial model
    with pytest.raises(FederationStopped, match=r"3 of 4 classes have a valid module \(missing: \[2\]\)"):
        simulate(fed, mods=[SlowClient(45, [2])])  # the other clients answer within seconds
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["status"] == "stopped" and report["missing_classes"] == [2]
    assert list(report["failures"]) == ["2"] and report["failures"]["2"]["classes"] == [2]
    assert report["failures"]["2"]["reason"] == "no reply within reply_timeout=25.0s"
    assert "methods" not in report and not (tmp_path / "run" / "classifier.safetensors").exists()
