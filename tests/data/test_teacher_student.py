import numpy as np
import pytest
import torch

from lit_repr.data import TeacherStudentDataModule


def _splits(**kw):
    dm = TeacherStudentDataModule(**kw)
    dm.setup("fit")
    return dm, {name: ds.tensors for name, ds in dm.datasets.items()}


def test_batches_carry_x_y_and_teacher_activations():
    dm, s = _splits(in_features=6, num_teacher_neurons=4, out_features=2, num_train=100, num_val=20, num_test=30,
                    batch_size=25)
    b = next(iter(dm.train_dataloader()))
    assert set(b) == {"x", "y", "latents", "index"}
    assert b["x"].shape == (25, 6) and b["y"].shape == (25, 2) and b["latents"].shape == (25, 4)
    assert {k: len(v["x"]) for k, v in s.items()} == {"train": 100, "val": 20, "test": 30}
    assert dm.teacher_hidden_weight.shape == (4, 6) and dm.teacher_output_weight.shape == (2, 4)
    assert torch.allclose(dm.teacher_hidden_weight.norm(dim=1), torch.ones(4, dtype=torch.float64))


@pytest.mark.parametrize("radius", [1.0, 3.0])
def test_inputs_on_the_sphere_and_noiseless_labels_are_the_teacher(radius):
    dm, s = _splits(in_features=5, num_teacher_neurons=3, num_train=200, radius=radius)
    x = s["train"]["x"].double()
    assert torch.allclose(x.norm(dim=1), torch.full((200,), radius, dtype=torch.float64), atol=1e-5)
    h = torch.relu(x @ dm.teacher_hidden_weight.T)
    assert torch.allclose(s["train"]["latents"].double(), h, atol=1e-5)
    assert torch.allclose(s["train"]["y"].double(), h @ dm.teacher_output_weight.T, atol=1e-5)
    assert (s["train"]["latents"] == 0).any() and (s["train"]["latents"] > 0).any()  # ReLU: both sides


def test_whitened_inputs_at_radius_sqrt_d():
    d = 4
    _, s = _splits(in_features=d, num_train=20_000, num_val=0, num_test=0, radius=d**0.5)
    x = s["train"]["x"].double()
    assert torch.allclose(x.T @ x / len(x), torch.eye(d, dtype=torch.float64), atol=0.05)


def test_noise_level():
    kw = dict(in_features=5, num_train=20_000, num_val=0, num_test=0, seed=3)
    dm, clean = _splits(**kw)
    _, noisy = _splits(**kw, noise_std=0.3)
    assert torch.equal(clean["train"]["x"], noisy["train"]["x"])
    residual = (noisy["train"]["y"] - clean["train"]["y"]).double()
    assert abs(residual.std().item() - 0.3) < 0.01 and abs(residual.mean().item()) < 0.01


def test_deterministic_per_seed():
    _, a = _splits(num_train=50, seed=1, noise_std=0.1)
    _, b = _splits(num_train=50, seed=1, noise_std=0.1)
    _, c = _splits(num_train=50, seed=2, noise_std=0.1)
    for k in ("x", "y", "latents"):
        assert torch.equal(a["train"][k], b["train"][k])
    assert not torch.equal(a["train"]["x"], c["train"]["x"])
    assert not np.allclose(a["val"]["x"].numpy()[:5], a["train"]["x"].numpy()[:5])  # splits are independent draws


@pytest.mark.parametrize(
    "kw,match",
    [
        ({"in_features": 0}, "in_features must be an int >= 1"),
        ({"num_teacher_neurons": 1.5}, "num_teacher_neurons"),
        ({"noise_std": -0.1}, "noise_std must be a finite number >= 0"),
        ({"radius": 0.0}, "radius must be a finite number > 0"),
        ({"num_train": 0}, "num_train"),
        ({"batch_size": 0}, "batch_size"),
    ],
)
def test_bad_arguments(kw, match):
    with pytest.raises(ValueError, match=match):
        TeacherStudentDataModule(**kw)
