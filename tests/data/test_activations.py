"""ActivationsDataModule: round trip, resume, hash checks, manifest checks, sequences, SAE training."""

import json
import os

import lightning.pytorch as pl
import pytest
import torch
from torch import nn

from lit_repr import features
from lit_repr.data import ActivationsDataModule, ArrayDataModule
from lit_repr.data.activations import ChunkedActivationsDataset


class Source(ArrayDataModule):
    def __init__(self, n=40, d=6, **kw):
        super().__init__(batch_size=8, **kw)
        self.n, self.d = n, d

    def build_splits(self):
        g = torch.Generator().manual_seed(0)
        out = {}
        for split, n in (("train", self.n), ("val", self.n // 2)):
            x = torch.randn(n, self.d, generator=g)
            out[split] = {"x": x, "y": (x[:, 0] > 0).long(), "latents": x[:, :2] * 2}
        return out


def make_net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Dropout(0.3), nn.Linear(8, 4))


class Counting(nn.Module):
    """Wraps a net; counts forward calls and fails on the ``fail_at``-th (0-based)."""

    def __init__(self, net, fail_at=None):
        super().__init__()
        self.net, self.calls, self.fail_at = net, 0, fail_at

    def forward(self, x):
        if self.fail_at is not None and self.calls == self.fail_at:
            raise RuntimeError("killed")
        self.calls += 1
        return self.net(x)


def all_rows(dm, split="train"):
    ds = dm.datasets[split]
    return {k: torch.stack([ds[i][k] for i in range(len(ds))]) for k in ds[0]}


def test_round_trip_equals_features_and_leaves_state(tmp_path):
    net, src = make_net(), Source()
    net.train()
    torch.manual_seed(123)
    rng = torch.get_rng_state()
    dm = ActivationsDataModule(net, ["0", "3"], src, cache_dir=tmp_path, batch_size=7)
    dm.prepare_data()
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(m.training for m in net.modules())
    dm.setup("fit")
    src.setup("fit")
    for split in ("train", "val"):
        ref = features(net, ["0", "3"], src.probe_dataloaders()[split])
        rows = all_rows(dm, split)
        assert torch.allclose(rows["x"], ref["0"]) and torch.allclose(rows["3"], ref["3"])
        data = src.datasets[split].tensors
        assert torch.equal(rows["y"], data["y"]) and torch.equal(rows["latents"], data["latents"])
        assert torch.equal(rows["index"], torch.arange(len(rows["x"])))
        assert torch.equal(rows["doc"], data["index"])
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["model"]["class"] == "Sequential" and len(manifest["model"]["sha256"]) == 64
    assert manifest["sites"] == ["0", "3"] and manifest["shapes"] == {"0": [8], "3": [4]}
    assert manifest["dtype"] == "float32" and all(c["sha256"] for c in manifest["splits"]["train"]["chunks"].values())
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob("*.pkl"))
    batch = next(iter(dm.train_dataloader()))
    assert set(batch) == {"x", "3", "y", "latents", "index", "doc"} and batch["x"].shape == (7, 8)
    assert dm.in_features == 8


def test_resume_computes_only_missing_chunks(tmp_path):
    net = make_net()
    killed = Counting(net, fail_at=3)
    dm = ActivationsDataModule(killed, ["net.0"], Source(), cache_dir=tmp_path, splits=["train"])
    with pytest.raises(RuntimeError, match="killed"):
        dm.prepare_data()
    assert sorted(p.name for p in tmp_path.glob("*.safetensors")) == [f"train-00000{i}.safetensors" for i in range(3)]
    again = Counting(net)
    dm2 = ActivationsDataModule(again, ["net.0"], Source(), cache_dir=tmp_path, splits=["train"])
    dm2.prepare_data()
    assert again.calls == 5 - 3  # 40 rows / batch 8 = 5 batches, 3 were cached
    dm2.setup()
    fresh = Counting(net)
    ref = ActivationsDataModule(fresh, ["net.0"], Source(), cache_dir=tmp_path / "ref", splits=["train"])
    ref.prepare_data(), ref.setup()
    assert torch.equal(all_rows(dm2)["x"], all_rows(ref)["x"])
    ActivationsDataModule(again, ["net.0"], Source(), cache_dir=tmp_path, splits=["train"]).prepare_data()
    assert again.calls == 2  # a complete cache is not computed again


def test_altered_chunk_is_extracted_again(tmp_path):
    net = make_net()
    dm = ActivationsDataModule(net, ["0"], Source(), cache_dir=tmp_path, batches_per_chunk=2)
    dm.prepare_data()
    dm.setup()
    before = all_rows(dm)["x"]
    bad = tmp_path / "train-000001.safetensors"
    bad.write_bytes(bad.read_bytes()[:-10])
    with pytest.raises(ValueError, match="train-000001.safetensors"):
        ActivationsDataModule(None, ["0"], None, cache_dir=tmp_path).setup()
    counting = Counting(net)
    dm2 = ActivationsDataModule(counting, ["net.0"], Source(), cache_dir=tmp_path / "c", batches_per_chunk=2)
    dm2.prepare_data()
    counting.calls = 0
    target = tmp_path / "c" / "train-000001.safetensors"
    data = bytearray(target.read_bytes())
    data[-1] ^= 1
    target.write_bytes(bytes(data))
    with pytest.warns(UserWarning, match="train-000001.safetensors"):
        dm2.setup()
    assert counting.calls == 2  # the two batches of that chunk only
    assert torch.equal(all_rows(dm2)["x"], before)
    dm3 = ActivationsDataModule(net, ["0"], Source(), cache_dir=tmp_path, batches_per_chunk=2)
    with pytest.warns(UserWarning, match="train-000001"):
        dm3.setup()
    assert torch.equal(all_rows(dm3)["x"], before)
    loaded = ActivationsDataModule(None, ["0"], None, cache_dir=tmp_path)
    loaded.setup()
    assert torch.equal(all_rows(loaded)["x"], before)


def test_cache_of_another_run_is_not_overwritten(tmp_path):
    ActivationsDataModule(make_net(0), ["0"], Source(), cache_dir=tmp_path).prepare_data()
    other = make_net(1)
    with pytest.raises(ValueError, match="another run") as err:
        ActivationsDataModule(other, ["0"], Source(), cache_dir=tmp_path).prepare_data()
    from lit_repr.data.activations import model_identity

    assert model_identity(other)["sha256"] in str(err.value) and model_identity(make_net(0))["sha256"] in str(err.value)
    with pytest.raises(ValueError, match=r"\['0'\].*\['0', '3'\]"):
        ActivationsDataModule(make_net(0), ["0", "3"], Source(), cache_dir=tmp_path).prepare_data()
    dm = ActivationsDataModule(other, ["0"], Source(), cache_dir=tmp_path, overwrite=True)
    dm.prepare_data(), dm.setup()
    assert torch.allclose(all_rows(dm)["x"], features(other, "0", dm.data.probe_dataloaders()["train"])["0"])


def test_cache_dir_not_writable(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ValueError, match="cache_dir.*file/sub"):
        ActivationsDataModule(make_net(), ["0"], Source(), cache_dir=blocker / "sub").prepare_data()
    if os.getuid() != 0:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        with pytest.raises(ValueError, match="cache_dir"):
            ActivationsDataModule(make_net(), ["0"], Source(), cache_dir=ro).prepare_data()


class Tokens(ArrayDataModule):
    def build_splits(self):
        g = torch.Generator().manual_seed(0)
        x = torch.randint(0, 10, (6, 5), generator=g)
        return {"train": {"x": x, "y": torch.arange(6) % 2, "tags": x % 3}}


class TinyLM(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb, self.mix = nn.Embedding(10, 4), nn.Linear(4, 4)

    def forward(self, x):
        return self.mix(self.emb(x))


def test_sequence_outputs_are_flattened_with_doc_and_position(tmp_path):
    torch.manual_seed(0)
    lm, src = TinyLM(), Tokens(batch_size=4)
    dm = ActivationsDataModule(lm, ["mix"], src, cache_dir=tmp_path, dtype=torch.bfloat16)
    dm.prepare_data(), dm.setup()
    rows = all_rows(dm)
    assert rows["x"].shape == (30, 4) and rows["x"].dtype == torch.bfloat16
    assert torch.equal(rows["doc"], torch.arange(6).repeat_interleave(5))
    assert torch.equal(rows["position"], torch.arange(5).repeat(6))
    assert torch.equal(rows["y"], (torch.arange(6) % 2).repeat_interleave(5))
    x = src.datasets["train"].tensors["x"]
    assert torch.equal(rows["tags"], (x % 3).reshape(30))  # per-token ground truth stays aligned
    with torch.no_grad():
        ref = lm(x).reshape(30, 4).to(torch.bfloat16)
    assert torch.equal(rows["x"], ref)


class PaddedTokens(ArrayDataModule):
    """Token sequences of lengths 1..5 padded to 5, with an attention mask; ids of padding are 0."""

    def build_splits(self):
        g = torch.Generator().manual_seed(0)
        lengths = torch.tensor([3, 5, 1, 4, 2, 5, 2])
        mask = (torch.arange(5) < lengths[:, None]).long()
        ids = torch.randint(1, 10, (7, 5), generator=g) * mask
        return {"train": {"input_ids": ids, "attention_mask": mask, "y": torch.arange(7) % 3, "tags": ids % 4}}


class MaskedLM(nn.Module):
    """Reads a dict batch; every padding token's output is NaN, so a written padding row cannot go unseen."""

    def __init__(self):
        super().__init__()
        self.emb, self.mix = nn.Embedding(10, 4), nn.Linear(4, 4)

    def forward(self, batch):
        h = self.mix(self.emb(batch["input_ids"]))
        return h, h.masked_fill(batch["attention_mask"][..., None] == 0, float("nan"))


class Padded(nn.Module):
    def __init__(self):
        super().__init__()
        self.lm, self.out = MaskedLM(), nn.Identity()

    def forward(self, batch):
        return self.out(self.lm(batch)[1])


def test_sequence_outputs_drop_padding_tokens(tmp_path):
    torch.manual_seed(0)
    lm, src = Padded(), PaddedTokens(batch_size=3)
    dm = ActivationsDataModule(lm, ["out"], src, cache_dir=tmp_path / "a", input_key=lambda b: b)
    dm.prepare_data(), dm.setup()
    rows = all_rows(dm)
    data = src.datasets["train"].tensors
    mask = data["attention_mask"].bool()
    n = int(mask.sum())
    assert n == 22 and rows["x"].shape == (n, 4) and torch.isfinite(rows["x"]).all()
    docs, positions = mask.nonzero(as_tuple=True)  # row-major: document by document, token by token
    assert torch.equal(rows["doc"], docs) and torch.equal(rows["position"], positions)
    assert torch.equal(rows["input_ids"], data["input_ids"][mask]) and (rows["input_ids"] > 0).all()
    assert torch.equal(rows["tags"], data["tags"][mask]) and torch.equal(rows["y"], data["y"][docs])
    assert "attention_mask" not in rows
    with torch.no_grad():
        ref = lm.lm.mix(lm.lm.emb(data["input_ids"]))[mask]
    assert torch.equal(rows["x"], ref)
    # mask_key=None keeps every token (here the NaN of padding tokens, which raises before writing)
    with pytest.raises(ValueError, match="not finite"):
        ActivationsDataModule(lm, ["out"], src, cache_dir=tmp_path / "b", input_key=lambda b: b,
                              mask_key=None).prepare_data()
    assert not list((tmp_path / "b").glob("*.safetensors"))
    keep_all = ActivationsDataModule(lm, ["lm"], src, cache_dir=tmp_path / "c", input_key=lambda b: b, mask_key=None)
    keep_all.prepare_data(), keep_all.setup()
    assert len(keep_all.datasets["train"]) == 35


def test_a_mask_of_the_wrong_shape_or_values_raises(tmp_path):
    class Odd(PaddedTokens):
        def build_splits(self):
            split = super().build_splits()["train"]
            return {"train": {**split, "attention_mask": self.bad(split["attention_mask"])}}

    for name, bad, match in [("shape", lambda m: m[:, :4], r"shape \(batch, tokens\) = \(3, 5\)"),
                             ("values", lambda m: m * 2, "must hold 0 .padding. and 1")]:
        src = Odd(batch_size=3)
        src.bad = bad
        with pytest.raises(ValueError, match=match):
            ActivationsDataModule(TinyLM(), ["mix"], src, cache_dir=tmp_path / name,
                                  input_key="input_ids").prepare_data()
        assert not list((tmp_path / name).glob("*.safetensors")), name
    with pytest.raises(ValueError, match="mask_key must be a batch key"):
        ActivationsDataModule(Padded(), ["lm"], PaddedTokens(), cache_dir=tmp_path, mask_key=3)


def test_non_finite_activations_raise_before_writing(tmp_path):
    net = make_net()
    with torch.no_grad():
        net[0].bias[0] = float("nan")
    with pytest.raises(ValueError, match="not finite"):
        ActivationsDataModule(net, ["0"], Source(), cache_dir=tmp_path).prepare_data()
    assert not list(tmp_path.glob("*.safetensors"))


def test_dataset_keeps_few_chunks_in_memory(tmp_path):
    dm = ActivationsDataModule(make_net(), ["0"], Source(), cache_dir=tmp_path, splits=["train"])
    dm.prepare_data(), dm.setup()
    ds = dm.datasets["train"]
    assert isinstance(ds, ChunkedActivationsDataset) and len(ds.files) == 5
    for i in range(len(ds)):
        ds[i]
        assert len(ds._cache) <= ds.max_cached_chunks
    order = list(iter(dm.train_dataloader().sampler))
    assert sorted(order) == list(range(40))
    assert len({i // 8 for i in order[:8]}) == 1  # one chunk at a time


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="dtype"):
        ActivationsDataModule(make_net(), ["0"], Source(), cache_dir=tmp_path, dtype=torch.int64)
    with pytest.raises(ValueError, match="batches_per_chunk"):
        ActivationsDataModule(make_net(), ["0"], Source(), cache_dir=tmp_path, batches_per_chunk=0)
    with pytest.raises(ValueError, match="no manifest.json"):
        ActivationsDataModule(None, ["0"], None, cache_dir=tmp_path).setup()


def test_sae_trains_one_epoch_from_cache(tmp_path):
    from lit_repr.models import SparseAutoencoder

    dm = ActivationsDataModule(make_net(), ["0"], Source(n=64), cache_dir=tmp_path, batch_size=16)
    dm.prepare_data(), dm.setup("fit")
    sae = SparseAutoencoder(in_features=dm.in_features, num_latents=16, variant="topk", variant_args={"k": 4})
    trainer = pl.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, accelerator="cpu")
    trainer.fit(sae, datamodule=dm)
    assert trainer.current_epoch == 1 and trainer.global_step == 4
