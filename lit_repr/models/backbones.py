"""Backbones: an MLP with tappable blocks, or any timm architecture built without weights."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

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
        if not isinstance(in_features, int) or in_features < 1:
            raise ValueError(f"in_features must be a positive int, got {in_features!r}")
        hidden = list(hidden)
        if not hidden or any((not isinstance(h, int)) or h < 1 for h in hidden):
            raise ValueError(f"hidden must be a non-empty list of positive ints, got {hidden!r}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        blocks = []
        d = in_features
        for h in hidden:
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
    if name == "mlp":
        if in_features is None:
            raise ValueError("backbone='mlp' needs in_features (the flattened input dimension)")
        return MLP(in_features, hidden, activation, dropout, batch_norm)
    import timm

    if not timm.is_model(name):
        import difflib

        close = difflib.get_close_matches(name, timm.list_models(), n=5)
        raise ValueError(f"backbone {name!r} is neither 'mlp' nor a timm model; closest timm names: {close}")
    model = timm.create_model(name, pretrained=False, num_classes=0, in_chans=in_channels, **(timm_kwargs or {}))
    return model
