"""What travels in Flower's records: the core's task down, the modules' exact bytes and manifests up."""

import json

import pytest
import torch
from flwr.app import ConfigRecord, RecordDict
from lit_repr_flower.messages import ReplyError, decode_reply, decode_task, encode_reply, encode_task

from lit_repr.federated.engine import ClientTask
from lit_repr.federated.exchange import pack, verify
from lit_repr.federated.priors import build_prior


@pytest.fixture(scope="module")
def payloads():
    out = []
    for cls in (1, 3):
        images = torch.rand(12, 1, 4, 4, generator=torch.Generator().manual_seed(cls))
        prior = build_prior("gmm", (1, 4, 4), num_components=1, num_pca_components=3)
        prior.fit_data(images, seed=cls, trainer_kwargs={"max_epochs": 2})
        out.append(pack(prior, client=2, cls=cls))
    return out


def test_task_round_trip():
    task = ClientTask(client=3, prior="gmm", prior_config={"num_components": 2}, trainer={"max_epochs": 4}, seed=7,
                      classes=(3,))
    assert decode_task(encode_task(task)) == task
    with pytest.raises(ValueError, match="task must be a ClientTask"):
        encode_task(task.to_dict())


def test_reply_carries_the_exact_bytes_and_the_server_verifies_them(payloads):
    client, back = decode_reply(encode_reply(2, payloads))
    assert client == 2 and back == payloads  # same manifests, same safetensors bytes
    for p in back:
        assert verify(p).sample(3, torch.Generator().manual_seed(0)).shape == (3, 1, 4, 4)
    content = encode_reply(2, payloads)
    assert set(content) == {"client", "module.0", "module.1"}
    assert content["client"]["classes"] == [1, 3] and isinstance(content["module.0"]["data"], bytes)


@pytest.mark.parametrize(
    "break_it, match",
    [
        (lambda c: c.pop("client"), "no 'client' record"),
        (lambda c: c.pop("module.1"), "announces 2 modules"),
        (lambda c: c.__setitem__("module.0", ConfigRecord({"manifest": "{}"})), "must be a ConfigRecord with"),
        (lambda c: c.__setitem__("module.0", ConfigRecord({"manifest": "[1]", "data": b""})), "not a JSON object"),
        (lambda c: c.__setitem__("module.0", ConfigRecord({"manifest": "{", "data": b""})), "is not JSON"),
        (lambda c: c.__setitem__("module.0", ConfigRecord({"manifest": "{}", "data": "text"})), "bytes data"),
        (lambda c: c["client"].__setitem__("client", -1), "client id must be an int >= 0"),
    ],
)
def test_malformed_replies_are_refused(payloads, break_it, match):
    content = encode_reply(2, payloads)
    break_it(content)
    with pytest.raises(ReplyError, match=match):
        decode_reply(content)


def test_task_errors_name_the_record():
    with pytest.raises(ValueError, match="no 'task' record"):
        decode_task(RecordDict())
    bad = RecordDict({"task": ConfigRecord({"task": json.dumps({"client": 0})})})
    with pytest.raises(ValueError, match="lacks"):
        decode_task(bad)
