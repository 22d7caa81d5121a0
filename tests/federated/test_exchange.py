import hashlib
import io
import json
import pickle
import struct
import zipfile

import pytest
import torch

from lit_repr.federated.exchange import (
    FORMAT,
    ExchangeError,
    ModulePayload,
    load_payloads,
    pack,
    read_header,
    save_payloads,
    verify,
)


def fitted(prior_cls, seed=0, shape=(1, 4, 4)):
    return prior_cls(shape).fit_data(torch.rand(10, *shape, generator=torch.Generator().manual_seed(seed)), seed=seed)


def rehash(manifest, data):
    return {**manifest, "num_bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def test_pack_manifest_and_round_trip(pixel_prior):
    prior = fitted(pixel_prior)
    payload = pack(prior, client=2, cls=5)
    m = payload.manifest
    assert m["format"] == FORMAT and m["client"] == 2 and m["cls"] == 5 and m["kind"] == "pixel"
    assert m["tensors"]["mean"] == {"dtype": "float32", "shape": [1, 4, 4]}
    assert m["tensors"]["fitted"] == {"dtype": "bool", "shape": []}
    assert m["num_bytes"] == len(payload.data) and m["sha256"] == hashlib.sha256(payload.data).hexdigest()
    json.dumps(m)
    back = verify(payload)
    for k, v in prior.tensors().items():
        assert torch.equal(back.tensors()[k], v)
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    assert torch.equal(back.sample(3, g1), prior.sample(3, g2))


def test_pack_rejects_bad_ids(pixel_prior):
    with pytest.raises(ValueError, match="client must be an int >= 0"):
        pack(fitted(pixel_prior), client=-1, cls=0)
    with pytest.raises(ValueError, match="cls must be an int >= 0"):
        pack(fitted(pixel_prior), client=0, cls="a")


def test_hash_mismatch(pixel_prior):
    p = pack(fitted(pixel_prior), 1, 3)
    data = bytearray(p.data)
    data[-1] ^= 0xFF  # same size, one flipped byte in a tensor
    with pytest.raises(ExchangeError, match=r"client 1, class 3: sha256 mismatch"):
        verify(ModulePayload(p.manifest, bytes(data)))


def test_size_mismatch(pixel_prior):
    p = pack(fitted(pixel_prior), 1, 3)
    with pytest.raises(ExchangeError, match="size mismatch"):
        verify(ModulePayload({**p.manifest, "num_bytes": p.manifest["num_bytes"] + 1}, p.data))


def test_truncated_file(pixel_prior):
    p = pack(fitted(pixel_prior), 0, 0)
    cut = p.data[:-7]
    with pytest.raises(ExchangeError, match=r"client 0, class 0: not a valid safetensors file.*truncated"):
        verify(ModulePayload(rehash(p.manifest, cut), cut))  # even with a matching hash
    with pytest.raises(ExchangeError, match="not a valid safetensors"):
        verify(ModulePayload(p.manifest, p.data[:5]))


def test_shape_and_dtype_mismatch_against_manifest(pixel_prior):
    p = pack(fitted(pixel_prior), 4, 1)
    bad = json.loads(json.dumps(p.manifest))
    bad["tensors"]["mean"]["shape"] = [1, 2, 8]
    with pytest.raises(ExchangeError, match=r"client 4, class 1: tensor 'mean': shape \[1, 4, 4\] in the file"):
        verify(ModulePayload(bad, p.data))
    bad = json.loads(json.dumps(p.manifest))
    bad["tensors"]["std"]["dtype"] = "float64"
    with pytest.raises(ExchangeError, match="tensor 'std': dtype float32 in the file"):
        verify(ModulePayload(bad, p.data))
    bad = json.loads(json.dumps(p.manifest))
    bad["tensors"]["extra"] = {"dtype": "float32", "shape": [1]}
    with pytest.raises(ExchangeError, match="tensor names differ"):
        verify(ModulePayload(bad, p.data))


def test_shape_mismatch_against_prior_config(pixel_prior):
    """A consistent file and manifest whose tensors do not fit the prior's config are refused by from_tensors."""
    from safetensors.torch import save

    p = pack(fitted(pixel_prior), 0, 2)
    tensors = {"mean": torch.zeros(1, 2, 2), "std": torch.zeros(1, 2, 2), "fitted": torch.tensor(True)}
    data = save(tensors)
    manifest = rehash({**p.manifest, "tensors": {
        "mean": {"dtype": "float32", "shape": [1, 2, 2]},
        "std": {"dtype": "float32", "shape": [1, 2, 2]},
        "fitted": {"dtype": "bool", "shape": []},
    }}, data)
    with pytest.raises(ExchangeError, match="cannot be rebuilt"):
        verify(ModulePayload(manifest, data))


def test_unknown_kind(pixel_prior):
    p = pack(fitted(pixel_prior), 0, 0)
    with pytest.raises(ExchangeError, match=r"unknown prior kind 'flow'; known: \['pixel'\]"):
        verify(ModulePayload({**p.manifest, "kind": "flow"}, p.data))


class Boom:
    def __reduce__(self):
        return (exec, ("raise SystemExit('executed')",))


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_pickled_payload_is_refused_without_loading(pixel_prior, protocol):
    data = pickle.dumps({"mean": torch.zeros(1, 4, 4), "x": Boom()}, protocol=protocol)
    p = pack(fitted(pixel_prior), 0, 0)
    with pytest.raises(ExchangeError, match="is a pickle"):
        verify(ModulePayload(rehash(p.manifest, data), data))


def test_torch_save_zip_is_refused(pixel_prior):
    buf = io.BytesIO()
    torch.save({"mean": torch.zeros(1, 4, 4)}, buf)
    data = buf.getvalue()
    assert zipfile.is_zipfile(io.BytesIO(data))
    p = pack(fitted(pixel_prior), 0, 0)
    with pytest.raises(ExchangeError, match="zip archive"):
        verify(ModulePayload(rehash(p.manifest, data), data))


def test_bad_manifest_fields(pixel_prior):
    p = pack(fitted(pixel_prior), 0, 0)
    with pytest.raises(ExchangeError, match="lacks"):
        verify(ModulePayload({k: v for k, v in p.manifest.items() if k != "sha256"}, p.data))
    with pytest.raises(ExchangeError, match="format"):
        verify(ModulePayload({**p.manifest, "format": "other/9"}, p.data))
    with pytest.raises(ExchangeError, match="cls must be an int"):
        verify(ModulePayload({**p.manifest, "cls": -2}, p.data))


def test_read_header_rejects_overlapping_and_huge_headers():
    from safetensors.torch import save

    data = save({"a": torch.zeros(2), "b": torch.zeros(2)})
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    header["b"]["data_offsets"] = header["a"]["data_offsets"]
    body = json.dumps(header).encode()
    forged = struct.pack("<Q", len(body)) + body + data[8 + n :]
    with pytest.raises(ValueError, match="not contiguous|need"):
        read_header(forged)
    with pytest.raises(ValueError, match="does not fit"):
        read_header(struct.pack("<Q", 10**12) + b"{}")


def test_header_with_128_bytes_is_not_mistaken_for_a_pickle(pixel_prior):
    """A header length of 128 makes the first byte 0x80, the pickle opcode: still a valid file."""
    from safetensors.torch import save

    for name_len in range(1, 120):
        data = save({"m" * name_len: torch.zeros(1)})
        if data[0] == 0x80:
            break
    else:
        pytest.skip("no name length gives a 128-byte header")
    assert read_header(data) == {"m" * name_len: {"dtype": "float32", "shape": [1]}}


def test_save_and_load_directory(pixel_prior, tmp_path):
    payloads = [pack(fitted(pixel_prior, seed=s), client=s, cls=10 - s) for s in range(3)]
    written = save_payloads(payloads, tmp_path / "modules")
    assert sorted(p.name for p in written) == ["0_10.safetensors", "1_9.safetensors", "2_8.safetensors"]
    assert (tmp_path / "modules" / "1_9.json").is_file()
    back = load_payloads(tmp_path / "modules")
    assert [(p.client, p.cls) for p in back] == [(0, 10), (1, 9), (2, 8)]
    assert all(a == b for a, b in zip(sorted(payloads, key=lambda p: p.client), back))
    for p in back:
        verify(p)


def test_save_checks_everything_before_writing(pixel_prior, tmp_path):
    p = pack(fitted(pixel_prior), 0, 0)
    with pytest.raises(ValueError, match="two payloads for client 0, class 0"):
        save_payloads([p, p], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_load_reports_orphans(pixel_prior, tmp_path):
    save_payloads([pack(fitted(pixel_prior), 0, 1)], tmp_path)
    (tmp_path / "0_1.json").unlink()
    with pytest.raises(ValueError, match="no <client>_<cls>.json"):
        load_payloads(tmp_path)
    (tmp_path / "0_1.safetensors").unlink()
    (tmp_path / "3_3.json").write_text("{}")
    with pytest.raises(ValueError, match="no 3_3.safetensors"):
        load_payloads(tmp_path)
