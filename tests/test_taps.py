import pytest
import torch
from torch import nn

from lit_repr.taps import Tap, reduce_features, resolve_sites


def test_sequential_capture_detached_and_cleared():
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    x = torch.randn(5, 4, requires_grad=True)
    with Tap(net, ["0", "1"]) as tap:
        net(x)
        feats = tap.read()
        assert set(feats) == {"0", "1"}
        assert feats["1"].shape == (5, 8)
        assert not feats["1"].requires_grad
        torch.testing.assert_close(feats["1"], torch.relu(net[0](x)).detach())
        assert not tap.has_features()  # read clears
        with pytest.raises(RuntimeError, match="captured nothing"):
            tap.read()
    assert not tap.attached
    assert not net[0]._forward_hooks  # hooks removed on teardown


def test_multiple_forwards_concatenate():
    net = nn.Sequential(nn.Linear(3, 3))
    tap = Tap(net, "0")
    net(torch.randn(2, 3))
    net(torch.randn(4, 3))
    assert tap.read()["0"].shape == (6, 3)
    tap.remove()


def test_globs_and_wrong_name_lists_closest():
    net = nn.Sequential(nn.Sequential(nn.Linear(2, 2), nn.ReLU()), nn.Linear(2, 1))
    assert resolve_sites(net, "0.*") == ["0.0", "0.1"]
    with pytest.raises(ValueError, match=r"closest valid names: \['0.1'"):
        resolve_sites(net, "0.11")
    with pytest.raises(ValueError, match="matches no submodule"):
        Tap(net, ["backbone.layer3"])


def test_timm_model_sites():
    timm = pytest.importorskip("timm")
    model = timm.create_model("resnet10t", pretrained=False, num_classes=0)
    with Tap(model, ["layer2", "layer4"], reduction="mean") as tap:
        model(torch.randn(2, 3, 32, 32))
        f = tap.read()
    assert f["layer2"].shape[0] == 2 and f["layer2"].ndim == 2
    assert f["layer4"].shape == (2, model.num_features)
    with pytest.raises(ValueError, match="layer4"):
        Tap(model, ["layer44"])


def test_lightning_demo_transformer():
    from lightning.pytorch.demos import Transformer

    model = Transformer(vocab_size=50, nlayers=2, nhid=16, ninp=16, nhead=2)
    inputs = torch.randint(0, 50, (3, 7))
    target = torch.randint(0, 50, (3, 7))
    with Tap(model, ["transformer.encoder.layers.*"], reduction="none") as tap:
        model(inputs, target)
        f = tap.read()
    assert list(f) == ["transformer.encoder.layers.0", "transformer.encoder.layers.1"]
    assert f["transformer.encoder.layers.0"].shape[-1] == 16


def test_lightning_demo_boring_model():
    from lightning.pytorch.demos.boring_classes import BoringModel

    model = BoringModel()
    with Tap(model, "layer") as tap:
        model(torch.randn(4, 32))
        assert tap.read()["layer"].shape == (4, 2)


def test_reductions_and_dtype():
    x = torch.randn(2, 3, 4, 4)
    assert reduce_features(x, "flatten").shape == (2, 48)
    assert reduce_features(x, "mean").shape == (2, 3)
    assert reduce_features(x, "max").shape == (2, 3)
    seq = torch.randn(2, 5, 6)
    torch.testing.assert_close(reduce_features(seq, "cls"), seq[:, 0])
    with pytest.raises(ValueError, match="reduction must be one of"):
        Tap(nn.Linear(2, 2), "", reduction="sum")  # type: ignore[arg-type]
    net = nn.Sequential(nn.Linear(2, 2)).to(torch.float64)
    with Tap(net, "0") as tap:
        net(torch.randn(3, 2, dtype=torch.float64))
        assert tap.read()["0"].dtype == torch.float32


def test_when_training_only():
    net = nn.Sequential(nn.Linear(2, 2))
    tap = Tap(net, "0", when="training")
    net.eval()
    net(torch.randn(1, 2))
    assert not tap.has_features()
    net.train()
    net(torch.randn(1, 2))
    assert tap.has_features()
    tap.remove()


def test_tap_bad_args_name_argument_and_value():
    net = nn.Sequential(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="dtype must be a torch.dtype .* got 'float32'"):
        Tap(net, "0", dtype="float32")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="output_fn must be a callable .* got 0"):
        Tap(net, "0", output_fn=0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="when must be 'always', 'training' or 'eval', got 'test'"):
        Tap(net, "0", when="test")  # type: ignore[arg-type]
