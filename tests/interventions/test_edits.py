"""Edits at named sites: each equals its hand-written forward, and the model is untouched after the block."""

import pytest
import torch
from torch import nn

from lit_repr.interventions import (
    ActivationPatch,
    DirectionalAblation,
    MeanAblation,
    ResampleAblation,
    SAEFeatureAblation,
    Steering,
    ZeroAblation,
    cache_activations,
    intervene,
)
from lit_repr.metrics.probe import ProbeReadout
from lit_repr.metrics.readout import FIT
from lit_repr.models import SparseAutoencoder
from lit_repr.taps import Tap


def mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 3))


class Seq(nn.Module):
    """(batch, tokens) -> (batch, tokens, classes), with a shared embedding called twice."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.embed = nn.Embedding(7, 8)
        self.block = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True)
        self.mix = nn.Linear(8, 8)
        self.out = nn.Linear(8, 7)

    def forward(self, tokens):
        h = self.block(self.embed(tokens) + self.embed(tokens.flip(1)))
        return self.out(self.mix(h))


def all_edits(reference):
    cache_model = mlp()
    return [
        ZeroAblation(), MeanAblation(reference), ResampleAblation(reference),
        ActivationPatch(cache_activations(cache_model, "2", torch.randn(4, 5))),
        DirectionalAblation(torch.randn(6)), Steering(torch.randn(6), scale=3.0),
        SAEFeatureAblation(SparseAutoencoder(in_features=6, num_latents=12), features=[0, 3]),
    ]


def test_zero_ablation_equals_a_hand_written_forward_with_that_output_zeroed():
    net, x = mlp(), torch.randn(10, 5)
    with intervene(net, {"2": ZeroAblation()}):
        edited = net(x)
    h = net[1](net[0](x))
    h = torch.zeros_like(net[2](h))
    assert torch.equal(edited, net[4](net[3](h)))
    assert not torch.equal(edited, net(x))


@pytest.mark.parametrize("kw", [{}, {"positions": [1]}, {"units": [0, 5]}, {"positions": slice(0, 2), "units": 3}])
def test_patching_a_run_with_its_own_cache_is_a_no_op(kw):
    model, tokens = Seq().eval(), torch.randint(0, 7, (3, 4))
    clean = model(tokens)
    cache = cache_activations(model, ["embed", "block", "mix"], tokens)
    assert len(cache.values["embed"]) == 2  # the shared embedding: one entry per call
    with intervene(model, {s: ActivationPatch(cache, **kw) for s in ("embed", "block", "mix")}):
        assert torch.equal(model(tokens), clean)


def test_patching_restores_the_clean_run_and_restricts_to_positions_and_units():
    model = Seq().eval()
    clean, corrupted = torch.randint(0, 7, (2, 4)), torch.randint(0, 7, (2, 4))
    cache = cache_activations(model, "mix", clean)
    with intervene(model, {"mix": ActivationPatch(cache)}):
        assert torch.equal(model(corrupted), model.out(cache["mix"]))
    with Tap(model, "mix", reduction="none") as tap, intervene(model, {"mix": ActivationPatch(cache, positions=[2],
                                                                                            units=[1, 4])}):
        model(corrupted)
        patched = tap.read()["mix"]
    own = cache_activations(model, "mix", corrupted)["mix"]
    mask = torch.zeros_like(own, dtype=torch.bool)
    mask[:, 2, [1, 4]] = True
    assert torch.equal(patched[mask], cache["mix"][mask]) and torch.equal(patched[~mask], own[~mask])


def test_mean_ablation_with_a_constant_reference_equals_that_constant():
    net, c = mlp(), torch.full((1, 5), 0.7)
    reference = c.repeat(20, 1)
    x, constant = torch.randn(6, 5), net[0](c)
    with Tap(net, "0", reduction="none") as post, Tap(net, "0", reduction="none", record="pre") as pre:
        with intervene(net, {"0": MeanAblation(reference, batch_size=7)}):
            post.clear(), pre.clear()  # the reference pass on entry ran through the taps too
            net(x)
        torch.testing.assert_close(post.read()["0"], constant.expand(6, -1), rtol=0, atol=1e-6)
        assert torch.equal(pre.read()["0"], net[0](x))  # the Tap's choice: the value before the edit


@pytest.mark.parametrize("i", range(7))
def test_after_intervene_exits_outputs_equal_the_untouched_model_bit_for_bit(i):
    net, x = mlp(), torch.randn(9, 5)
    before = net(x).clone()
    params = {k: v.clone() for k, v in net.state_dict().items()}
    edit = all_edits(torch.randn(12, 5))[i]
    with intervene(net, {"2": edit}):
        during = net(x[:4])
    assert torch.equal(net(x), before)
    assert all(torch.equal(v, params[k]) for k, v in net.state_dict().items())
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in net.modules())
    assert during.shape == (4, 3)


def test_hooks_are_removed_when_the_block_raises():
    net = mlp()
    with pytest.raises(RuntimeError, match="boom"):
        with intervene(net, {"*": ZeroAblation()}):
            raise RuntimeError("boom")
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in net.modules())


def test_directional_ablation_and_steering_by_hand():
    net, x, d = mlp(), torch.randn(5, 5), torch.randn(6)
    h = net[2](net[1](net[0](x)))
    with Tap(net, "2", reduction="none") as tap:
        with intervene(net, {"2": DirectionalAblation(d)}):
            net(x)
        ablated = tap.read()["2"]
        with intervene(net, {"2": Steering(d, scale=-2.0, units=[1])}):
            net(x)
        steered = tap.read()["2"]
    u = d / d.norm()
    torch.testing.assert_close(ablated, h - (h @ u)[:, None] * u)
    torch.testing.assert_close(ablated @ u, torch.zeros(5), atol=1e-6, rtol=0)
    expected = h.clone()
    expected[:, 1] += -2.0 * d[1]
    torch.testing.assert_close(steered, expected)


def test_steering_along_a_probe_direction_and_an_sae_atom():
    torch.manual_seed(0)
    x = torch.randn(200, 4)
    y = (x[:, 0] > 0).long()
    probe = ProbeReadout(4, task="classification", num_classes=2)
    probe.update(x, y, FIT)
    probe.fit()
    s = Steering.from_probe(probe, output=1, scale=5.0)
    assert s.vector.norm().item() == pytest.approx(1.0) and s.vector[0] > 0.9  # the probe reads dimension 0
    net = nn.Sequential(nn.Identity())
    with intervene(net, {"0": s}):
        assert torch.allclose(net(x), x + 5.0 * s.vector)
    sae = SparseAutoencoder(in_features=4, num_latents=6)
    atom = Steering.from_sae(sae, feature=2)
    assert torch.equal(atom.vector, sae.W_dec[2].detach())


def test_sae_feature_ablation_keeps_the_error_term():
    torch.manual_seed(0)
    sae = SparseAutoencoder(in_features=6, num_latents=10, decoder_bias_init="zeros")
    sae.b_dec.data.normal_()
    net = nn.Sequential(nn.Identity())
    x = torch.randn(7, 6)
    with intervene(net, {"0": SAEFeatureAblation(sae, features=[1, 4])}):
        out = net(x)
    codes = sae.encode(x)
    removed = codes[:, [1, 4]] @ sae.W_dec[[1, 4]]
    torch.testing.assert_close(out, x - removed, atol=1e-5, rtol=1e-5)


def test_resample_ablation_draws_reference_rows_reproducibly():
    net = nn.Sequential(nn.Identity())
    ref = torch.arange(30.0).view(10, 3)
    with intervene(net, {"0": ResampleAblation(ref, seed=3)}):
        a = net(torch.zeros(8, 3))
    with intervene(net, {"0": ResampleAblation(ref, seed=3)}):
        b = net(torch.zeros(8, 3))
    assert torch.equal(a, b)
    assert all(any(torch.equal(row, r) for r in ref) for row in a)


# ------------------------------------------------------------------ bad input


def test_unknown_site_lists_the_nearest_names():
    with pytest.raises(ValueError, match=r"site 'blok' matches no submodule.*'block'"):
        with intervene(Seq(), {"blok": ZeroAblation()}):
            pass


def test_patch_cache_from_another_model_or_with_other_shapes():
    model = Seq().eval()
    other = nn.Sequential(nn.Linear(5, 8), nn.ReLU())
    foreign = cache_activations(other, "0", torch.randn(2, 5))
    with pytest.raises(ValueError, match="another model"):
        with intervene(model, {"mix": ActivationPatch(foreign)}):
            pass
    cache = cache_activations(model, "mix", torch.randint(0, 7, (2, 4)))
    with pytest.raises(ValueError, match=r"cache has shape \(2, 4, 8\) but this forward pass produced \(2, 5, 8\)"):
        with intervene(model, {"mix": ActivationPatch(cache)}):
            model(torch.randint(0, 7, (2, 5)))
    with pytest.raises(ValueError, match="holds no activations of site 'block'"):
        with intervene(model, {"block": ActivationPatch(cache)}):
            pass
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_steering_vector_of_the_wrong_width():
    net = mlp()
    with pytest.raises(ValueError, match=r"steering vector has width 3 but the site's output has shape \(2, 6\)"):
        with intervene(net, {"2": Steering(torch.ones(3))}):
            net(torch.randn(2, 5))
    with pytest.raises(ValueError, match="1-D vector"):
        Steering(torch.ones(2, 3))


def test_edit_on_a_site_whose_output_is_not_a_tensor_names_the_type():
    net = nn.Sequential(nn.LSTM(3, 4, batch_first=True))
    with pytest.raises(TypeError, match="returned tuple, not a tensor"):
        with intervene(net, {"0": ZeroAblation()}):
            net(torch.randn(2, 5, 3))


def test_empty_reference_set_for_mean_or_resample_ablation():
    for cls in (MeanAblation, ResampleAblation):
        with pytest.raises(ValueError, match="reference set is empty"):
            cls(torch.zeros(0, 5))
        net = mlp()
        with pytest.raises(ValueError, match="reference set is empty"):
            with intervene(net, {"0": cls(torch.utils.data.DataLoader(torch.utils.data.TensorDataset(
                    torch.zeros(0, 5)), batch_size=4))}):
                pass
        assert all(not m._forward_hooks for m in net.modules())


def test_other_bad_arguments():
    with pytest.raises(ValueError, match="must be an Edit"):
        with intervene(mlp(), {"0": "zero"}):
            pass
    with pytest.raises(ValueError, match="non-empty"):
        with intervene(mlp(), {}):
            pass
    model = Seq()
    with pytest.raises(ValueError, match=r"positions \[9\] out of range for a site output of size 4"):
        with intervene(model, {"mix": ZeroAblation(positions=[9])}):
            model(torch.zeros(1, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="record must be"):
        Tap(mlp(), "0", record="both")
    with pytest.raises(ValueError, match="features must be latent indices"):
        SAEFeatureAblation(SparseAutoencoder(in_features=6, num_latents=4), features=[4])


def test_an_unbound_reference_edit_says_how_to_prepare_it():
    net = mlp()
    with pytest.raises(RuntimeError, match="has not been prepared for site '0'"):
        with intervene(net, {"0": MeanAblation(torch.randn(4, 5))}, bind=False):
            net(torch.randn(2, 5))
