"""Backbones: an MLP with tappable blocks, or any timm architecture built without weights."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from lit_repr.checks import check_bool, check_choice, check_int, check_number

__all__ = ["MLP", "build_backbone", "ACTIVATIONS"]

ACTIVATIONS = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
    "leaky_relu": nn.LeakyReLU,
    "silu": nn.SiLU,
    "identity": nn.Identity,
}


class MLP(nn.Sequential):
    """A multilayer perceptron whose hidden blocks are tappable sites ``"0"``, ``"1"``, ...

    Block ``i`` is ``Sequential(Linear, [norm], activation, [dropout])``: tap ``"i"`` for the
    post-activation features of layer ``i`` or ``"i.0"`` for its pre-activation. Inputs of any
    shape are flattened.

    Args:
        in_features: input dimension (after flattening).
        hidden: widths of the hidden layers.
        activation: one of ``relu``, ``gelu``, ``tanh``, ``leaky_relu``, ``silu``, ``identity``.
        dropout: dropout probability after each activation.
        batch_norm: insert ``BatchNorm1d`` before each activation.

    Example:
        >>> import torch
        >>> MLP(64, [32, 16])(torch.randn(5, 1, 8, 8)).shape
        torch.Size([5, 16])
    """

    def __init__(
        self,
        in_features: int,
        hidden: Sequence[int] = (128, 128),
        activation: str = "relu",
        dropout: float = 0.0,
        batch_norm: bool = False,
    ) -> None:
        check_int("in_features", in_features)
        widths = list(hidden) if isinstance(hidden, Sequence) and not isinstance(hidden, str) else []
        if not widths or any(isinstance(h, bool) or not isinstance(h, int) or h < 1 for h in widths):
            raise ValueError(f"hidden must be a non-empty list of positive ints, got {hidden!r}")
        check_choice("activation", activation, tuple(ACTIVATIONS))
        check_number("dropout", dropout, low=0, high=1, high_open=True)
        check_bool("batch_norm", batch_norm)
        blocks = []
        d = in_features
        for h in widths:
            layers: list[nn.Module] = [nn.Linear(d, h)]
            if batch_norm:
                layers.append(nn.BatchNorm1d(h))
            layers.append(ACTIVATIONS[activation]())
            if dropout:
                layers.append(nn.Dropout(dropout))
            blocks.append(nn.Sequential(*layers))
            d = h
        super().__init__(*blocks)
        self.in_features = in_features
        self.num_features = d

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.flatten(1))


def build_backbone(
    name: str,
    in_features: int | None = None,
    in_channels: int = 3,
    hidden: Sequence[int] = (128, 128),
    activation: str = "relu",
    dropout: float = 0.0,
    batch_norm: bool = False,
    timm_kwargs: dict | None = None,
) -> nn.Module:
    """Build a feature extractor with a ``num_features`` attribute.

    Args:
        name: ``"mlp"``, or any timm model name (built with ``pretrained=False`` and no
            classifier, so it returns pooled features).
        in_features: input dimension for the MLP.
        in_channels: input channels for timm models.
        hidden, activation, dropout, batch_norm: MLP settings.
        timm_kwargs: extra keyword arguments for ``timm.create_model``.

    Example:
        >>> build_backbone("mlp", in_features=64, hidden=[32]).num_features
        32
    """
    if not isinstance(name, str):
        raise ValueError(f"name must be 'mlp' or a timm model name, got {name!r}")
    if name == "mlp":
        if in_features is None:
            raise ValueError("backbone='mlp' needs in_features (the flattened input dimension)")
        return MLP(in_features, hidden, activation, dropout, batch_norm)
    check_int("in_channels", in_channels)
    import timm

    if not timm.is_model(name):
        import difflib

        close = difflib.get_close_matches(name, timm.list_models(), n=5)
        raise ValueError(f"backbone {name!r} is neither 'mlp' nor a timm model; closest timm names: {close}")
    model = timm.create_model(name, pretrained=False, num_classes=0, in_chans=in_channels, **(timm_kwargs or {}))
    return model
