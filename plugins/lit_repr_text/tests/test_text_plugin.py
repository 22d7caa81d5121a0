"""The plugin registers through the lit_repr.plugins entry point, and a frozen LinearProbe on MiniLM's
pooled layer 3 reads the docstrings' properties better than chance."""

import lightning.pytorch as pl
import torch
from lit_repr import plugins
from lit_repr.callbacks import LinearProbe

from lit_repr_text import TextDataModule


def test_the_entry_point_is_registered_and_loads():
    names = {ep.name: ep.value for ep in plugins.discover_plugins()}
    assert names.get("lit_repr_text") == "lit_repr_text"
    loaded = plugins.load_plugins()
    assert "lit_repr_text" in loaded and hasattr(loaded["lit_repr_text"], "TextEncoder")
    assert "lit_repr_text" not in plugins.failed_plugins()


def test_the_short_class_names_resolve_in_the_command_line():
    from lit_repr.cli import LitReprCLI  # noqa: F401  (the CLI imports every plugin)
    from lightning.pytorch import LightningDataModule, LightningModule

    plugins.load_plugins()
    assert "TextEncoder" in {c.__name__ for c in LightningModule.__subclasses__()}
    assert "TextDataModule" in {c.__name__ for c in _all_subclasses(LightningDataModule)}


def _all_subclasses(cls):
    out = set(cls.__subclasses__())
    for c in list(out):
        out |= _all_subclasses(c)
    return out


def test_a_frozen_probe_on_pooled_layer_3_beats_chance(encoder, trainer_kwargs):
    torch.manual_seed(0)
    dm = TextDataModule(batch_size=64, num_texts=400, max_length=24, val_fraction=0.25, test_fraction=0.25)
    probe = LinearProbe(sites=["pooled.3"], targets={"kind": "kind", "has_code": "has_code"},
                        num_classes={"kind": 3, "has_code": 2}, mode="frozen", input_key="input_ids")
    trainer = pl.Trainer(**{**trainer_kwargs, "limit_train_batches": 1, "limit_val_batches": 1},
                         callbacks=[probe])
    trainer.fit(encoder, dm)
    scores = {k: float(v) for k, v in trainer.callback_metrics.items()}
    print({k: round(v, 3) for k, v in sorted(scores.items()) if "/test/" in k})
    kinds = dm.datasets["test"].tensors["kind"]
    majority = float(kinds.bincount().max()) / len(kinds)
    # kind: module / class / function docstrings; chance is the majority rate (accuracy) and 0.5 (AUROC)
    assert scores["probe/pooled.3/kind/test/acc"] > majority, (scores, majority)
    assert scores["probe/pooled.3/kind/test/auroc"] > 0.75, scores
    assert scores["probe/pooled.3/has_code/test/auroc"] > 0.65, scores
