"""The plugin registers through the lit_repr.plugins entry point, and a frozen LinearProbe on MiniLM's
pooled layer 3 reads the docstrings' properties better than chance."""

import sys

import lightning.pytorch as pl
import torch
from lit_repr_text import TextDataModule, TextEncoder

from lit_repr import plugins
from lit_repr.callbacks import LinearProbe


def test_the_entry_point_is_registered_and_loads():
    names = {ep.name: ep.value for ep in plugins.discover_plugins()}
    assert names.get("lit_repr_text") == "lit_repr_text"
    loaded = plugins.load_plugins()
    assert "lit_repr_text" in loaded and hasattr(loaded["lit_repr_text"], "TextEncoder")
    assert "lit_repr_text" not in plugins.failed_plugins()


def test_the_command_line_resolves_the_short_class_names(tmp_path, monkeypatch):
    from lit_repr.cli import LitReprCLI

    monkeypatch.setattr(sys, "argv", ["lit_repr"])
    monkeypatch.chdir(tmp_path)
    cli = LitReprCLI(args=["--model=TextEncoder", "--data=TextDataModule", "--data.init_args.num_texts=20",
                           "--trainer.logger=false"], run=False)
    assert isinstance(cli.model, TextEncoder) and isinstance(cli.datamodule, TextDataModule)


def test_a_frozen_probe_on_pooled_layer_3_beats_chance(encoder, trainer_kwargs):
    torch.manual_seed(0)
    dm = TextDataModule(batch_size=64, num_texts=400, max_length=24, val_fraction=0.25, test_fraction=0.25)
    probe = LinearProbe(sites=["pooled.3"], targets={"kind": "kind", "has_code": "has_code"},
                        num_classes={"kind": 3, "has_code": 2}, mode="frozen", input_key="input_ids")
    trainer = pl.Trainer(**{**trainer_kwargs, "limit_train_batches": 1, "limit_val_batches": 1},
                         callbacks=[probe])
    trainer.fit(encoder, dm)
    scores = {k: float(v) for k, v in trainer.callback_metrics.items()}
    kinds = dm.datasets["test"].tensors["kind"]
    majority = float(kinds.bincount().max()) / len(kinds)
    # kind: module / class / function docstrings; chance is the majority rate (accuracy) and 0.5 (AUROC)
    assert scores["probe/pooled.3/kind/test/acc"] > majority, (scores, majority)
    assert scores["probe/pooled.3/kind/test/auroc"] > 0.75, scores
    assert scores["probe/pooled.3/has_code/test/auroc"] > 0.65, scores
