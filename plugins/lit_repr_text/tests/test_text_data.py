"""The standard-library docstring corpus and TextDataModule: deterministic, split cleanly, properties that
agree with the texts, batches cut to their longest text, clear errors."""

import pytest
import torch
from lit_repr_text import KINDS, TextDataModule, has_code, load_tokenizer, stdlib_docstrings, trim_padding


def test_corpus_is_the_public_standard_library_without_tests_or_duplicates():
    docs = stdlib_docstrings()
    assert len(docs) > 1000
    assert len({d.text for d in docs}) == len(docs)
    packages = {d.package for d in docs}
    assert {"json", "email", "asyncio", "collections"} <= packages
    assert not packages & {"test", "idlelib", "tkinter", "lib2to3", "encodings"}
    assert not any(p.startswith("_") for p in packages)
    assert not any(part.startswith(("test", "_")) for d in docs for part in d.module.split("."))
    assert {d.kind for d in docs} == set(KINDS)
    assert all(d.text == d.text.strip() and d.text for d in docs)
    json_loads = next(d for d in docs if d.module == "json" and d.name == "loads")
    assert json_loads.kind == "function" and json_loads.package == "json"
    import json

    assert json_loads.text.splitlines()[0] == json.loads.__doc__.strip().splitlines()[0]
    assert stdlib_docstrings.__wrapped__() == docs  # parsing again gives the same corpus, in the same order


def test_has_code():
    assert has_code(">>> f(1)\n2")
    assert has_code("Example::\n\n    x = f(1)\n")
    assert not has_code("Return x:: not a block")
    assert not has_code("Plain words only.")


@pytest.fixture(scope="module")
def dm():
    d = TextDataModule(batch_size=16, num_texts=300, max_length=24, num_packages=5, seed=3)
    d.setup("fit")
    return d


def test_splits_are_deterministic_disjoint_and_cover_the_draw(dm):
    again = TextDataModule(batch_size=16, num_texts=300, max_length=24, num_packages=5, seed=3)
    again.setup("fit")
    texts = {s: [d.text for d in dm.texts(s)] for s in ("train", "val", "test")}
    assert texts == {s: [d.text for d in again.texts(s)] for s in texts}
    assert [len(t) for t in texts.values()] == [180, 60, 60]
    flat = [t for ts in texts.values() for t in ts]
    assert len(set(flat)) == 300
    for s in texts:
        for k, v in dm.datasets[s].tensors.items():
            assert torch.equal(v, again.datasets[s].tensors[k]), (s, k)
    other = TextDataModule(num_texts=300, max_length=24, num_packages=5, seed=4)
    other.setup()
    assert [d.text for d in other.texts("train")] != texts["train"]


def test_properties_agree_with_the_texts(dm):
    assert dm.package_names[-1] == "other" and len(dm.package_names) == 6
    assert dm.num_classes == {"package": 6, "length_bucket": 4, "has_code": 2, "kind": 3}
    all_docs = [d for s in ("train", "val", "test") for d in dm.texts(s)]
    counts = {p: sum(d.package == p for d in all_docs) for p in dm.package_names[:-1]}
    assert list(counts.values()) == sorted(counts.values(), reverse=True)
    assert all(sum(d.package == p for d in all_docs) <= min(counts.values()) for p in {d.package for d in all_docs}
               if p not in counts)
    t = dm.datasets["train"].tensors
    for i, d in enumerate(dm.texts("train")):
        name = dm.package_names[int(t["package"][i])]
        assert name == d.package or (name == "other" and d.package not in dm.package_names)
        words = len(d.text.split())
        assert int(t["length_bucket"][i]) == sum(words >= b for b in (8, 32, 128))
        assert int(t["has_code"][i]) == has_code(d.text)
        assert KINDS[int(t["kind"][i])] == d.kind
        ids = load_tokenizer()(d.text, truncation=True, max_length=24)["input_ids"]
        assert t["input_ids"][i, : len(ids)].tolist() == ids and int(t["attention_mask"][i].sum()) == len(ids)
    for k in ("package", "length_bucket", "kind"):
        assert len(torch.unique(t[k])) > 1, k


def test_batches_are_dicts_cut_to_their_longest_text(dm):
    batches = list(dm.val_dataloader())
    assert sum(len(b["index"]) for b in batches) == 60
    for b in batches:
        assert set(b) == {"input_ids", "attention_mask", "index", "package", "length_bucket", "has_code", "kind"}
        assert b["input_ids"].shape == b["attention_mask"].shape and b["input_ids"].shape[1] <= 24
        assert b["attention_mask"][:, -1].any() and (b["input_ids"][b["attention_mask"] == 0] == 0).all()
    assert set(dm.probe_dataloaders()) == {"train", "val", "test"}
    items = [{"input_ids": torch.tensor([5, 0, 0]), "attention_mask": torch.tensor([1, 0, 0]), "y": torch.tensor(1)}]
    assert trim_padding(items)["input_ids"].tolist() == [[5]]


def test_bad_arguments():
    with pytest.raises(ValueError, match="max_length must be at most 512"):
        TextDataModule(max_length=1000)
    with pytest.raises(ValueError, match="length_bins must be increasing word counts"):
        TextDataModule(length_bins=(32, 8))
    with pytest.raises(ValueError, match="val_fraction \\+ test_fraction must be < 1"):
        TextDataModule(val_fraction=0.5, test_fraction=0.5)
    with pytest.raises(ValueError, match="num_texts"):
        TextDataModule(num_texts=0)
    with pytest.raises(ValueError, match="num_texts must be at most the"):
        TextDataModule(num_texts=10_000_000).setup()
    with pytest.raises(ValueError, match="split must be one of"):
        TextDataModule(num_texts=10, max_length=8, test_fraction=0.0).texts("test")
