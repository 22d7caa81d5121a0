"""The contract every prior keeps: checks, determinism per seed, strict round trip through tensors, logging."""

import json

import pytest
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from lit_repr.federated.priors import PRIORS, GenerativePrior, build_prior
from lit_repr.federated.priors.base import check_image_shape, check_images

#: small and fast settings of each kind, on 8 x 8 digits
FAST = {
    "gmm": ({"num_components": 3, "num_pca_components": 8}, {"max_epochs": 20}),
    "vae": ({"latent_dim": 4, "hidden_channels": 8, "batch_size": 64}, {"max_epochs": 2}),
    "diffusion": (
        {"block_out_channels": [8, 16], "norm_num_groups": 4, "num_train_timesteps": 50, "num_inference_steps": 4},
        {"max_steps": 3},
    ),
}


def fit(kind, images, seed=0, **kwargs):
    config, trainer_kwargs = FAST[kind]
    return build_prior(kind, (1, 8, 8), **config).fit_data(images, seed=seed, trainer_kwargs=trainer_kwargs, **kwargs)


@pytest.fixture(scope="module")
def class_images(digits):
    images, labels, _ = digits
    return images[labels == 3][:100]


def test_registry_keys_are_the_kinds():
    assert set(PRIORS) <= set(FAST)
    for kind, cls in PRIORS.items():
        assert cls.kind == kind and issubclass(cls, GenerativePrior)


@pytest.mark.parametrize("kind", sorted(PRIORS))
def test_same_seed_same_tensors_and_samples_and_caller_state_untouched(kind, class_images):
    torch.manual_seed(123)
    rng_before = torch.get_rng_state()
    deterministic_before = torch.are_deterministic_algorithms_enabled()
    a = fit(kind, class_images, seed=7)
    assert torch.equal(torch.get_rng_state(), rng_before)  # the caller's random stream is left alone
    assert torch.are_deterministic_algorithms_enabled() == deterministic_before
    torch.rand(5)  # moving the global stream changes nothing
    b = fit(kind, class_images, seed=7)
    ta, tb = a.tensors(), b.tensors()
    assert ta.keys() == tb.keys()
    for name in ta:
        assert torch.equal(ta[name], tb[name]), name
    sa = a.sample(16, torch.Generator().manual_seed(5))
    assert torch.equal(sa, b.sample(16, torch.Generator().manual_seed(5)))
    assert not torch.equal(sa, a.sample(16, torch.Generator().manual_seed(6)))
    c = fit(kind, class_images, seed=8)
    assert not torch.equal(sa, c.sample(16, torch.Generator().manual_seed(5)))


@pytest.mark.parametrize("kind", sorted(PRIORS))
def test_round_trip_through_json_and_safetensors_gives_identical_samples(kind, class_images):
    prior = fit(kind, class_images)
    config = json.loads(json.dumps(prior.config()))
    tensors = st_load(st_save(prior.tensors()))
    assert all(t.is_contiguous() and t.device.type == "cpu" for t in tensors.values())
    rebuilt = PRIORS[kind].from_tensors(config, tensors)
    assert type(rebuilt) is type(prior) and rebuilt.config() == prior.config()
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert torch.equal(prior.sample(20, g1), rebuilt.sample(20, g2))


@pytest.mark.parametrize("kind", sorted(PRIORS))
def test_from_tensors_is_strict(kind, class_images):
    prior = fit(kind, class_images)
    config, tensors = prior.config(), prior.tensors()
    name = sorted(tensors)[0]
    cls = PRIORS[kind]
    with pytest.raises(ValueError, match=f"missing.*{name}"):
        cls.from_tensors(config, {k: v for k, v in tensors.items() if k != name})
    with pytest.raises(ValueError, match="unexpected.*surplus"):
        cls.from_tensors(config, {**tensors, "surplus": torch.zeros(1)})
    with pytest.raises(ValueError, match=f"{name}.*shape"):
        cls.from_tensors(config, {**tensors, name: torch.zeros(*tensors[name].shape, 2, dtype=tensors[name].dtype)})
    floating = next(k for k, v in tensors.items() if v.is_floating_point() and v.numel() > 0)
    with pytest.raises(ValueError, match=f"{floating}.*dtype"):
        cls.from_tensors(config, {**tensors, floating: tensors[floating].to(torch.float16)})
    with pytest.raises(ValueError, match=f"{floating}.*NaN"):
        cls.from_tensors(config, {**tensors, floating: torch.full_like(tensors[floating], float("nan"))})
    with pytest.raises(ValueError, match="image_shape"):
        cls.from_tensors({k: v for k, v in config.items() if k != "image_shape"}, tensors)
    with pytest.raises(ValueError, match="image_shape"):
        cls.from_tensors({**config, "image_shape": [1, 8]}, tensors)
    with pytest.raises(ValueError, match="concrete prior class"):
        GenerativePrior.from_tensors(config, tensors)


@pytest.mark.parametrize("kind", sorted(PRIORS))
def test_bad_images_are_refused_before_anything_changes(kind, class_images):
    prior = fit(kind, class_images)
    before = prior.tensors()
    bad = {
        "shape \\(N, 1, 8, 8\\)": class_images[:, :, :7],
        "shape": class_images[0],
        "values in \\[0, 1\\]": class_images * 2,
        "finite": class_images.clone().index_fill_(0, torch.tensor([0]), float("nan")),
        "torch.Tensor": class_images.numpy(),
        "floating-point": (class_images * 16).long(),
        "at least": class_images[:0],
    }
    for match, images in bad.items():
        with pytest.raises(ValueError, match=match):
            prior.fit_data(images, seed=0)
    with pytest.raises(ValueError, match="seed"):
        prior.fit_data(class_images, seed=-1)
    with pytest.raises(ValueError, match="logger"):
        prior.fit_data(class_images, seed=0, trainer_kwargs={"logger": False})
    with pytest.raises(ValueError, match="trainer_kwargs must be a dict"):
        prior.fit_data(class_images, seed=0, trainer_kwargs=[("max_epochs", 1)])
    with pytest.raises(Exception, match="precision"):  # refused by the Trainer itself
        prior.fit_data(class_images, seed=0, trainer_kwargs={"precision": "13-bit"})
    after = prior.tensors()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert bool(prior.fitted)


@pytest.mark.parametrize("kind", sorted(PRIORS))
def test_sampling_an_unfitted_prior_raises(kind):
    config, _ = FAST[kind]
    prior = build_prior(kind, (1, 8, 8), **config)
    with pytest.raises(RuntimeError, match="not fitted"):
        prior.sample(3)
    unfitted = PRIORS[kind].from_tensors(prior.config(), prior.tensors())
    with pytest.raises(RuntimeError, match="not fitted"):
        unfitted.sample(3)


def test_sample_arguments_are_checked(class_images):
    prior = fit("gmm", class_images)
    with pytest.raises(ValueError, match="n must be"):
        prior.sample(0)
    with pytest.raises(ValueError, match="generator"):
        prior.sample(2, generator=0)


def test_build_prior_checks_kind_and_shape():
    with pytest.raises(ValueError, match="kind must be one of .*'gmm'.*got 'flow'"):
        build_prior("flow", (1, 8, 8))
    with pytest.raises(ValueError, match="image_shape"):
        build_prior("gmm", (8, 8))
    prior = build_prior("gmm", (1, 8, 8), num_components=2)
    assert build_prior("gmm", **prior.config()).config() == prior.config()


def test_checks():
    assert check_image_shape([3, 32, 32]) == (3, 32, 32)
    for bad in [(0, 8, 8), (1.5, 8, 8), "1x8x8", None, (True, 8, 8)]:
        with pytest.raises(ValueError, match="image_shape"):
            check_image_shape(bad)
    out = check_images(torch.zeros(2, 1, 4, 4, dtype=torch.float64), (1, 4, 4))
    assert out.dtype == torch.float32


def test_tensorboard_logger_gets_a_grid_of_samples(tmp_path, class_images):
    from lightning.pytorch.loggers import TensorBoardLogger
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logger = TensorBoardLogger(str(tmp_path), name="prior")
    fit("gmm", class_images, logger=logger)
    logger.finalize("success")
    events = EventAccumulator(logger.log_dir)
    events.Reload()
    assert "prior/gmm/samples" in events.Tags()["images"]
    assert "train/log_likelihood" in events.Tags()["scalars"]
    assert not list(tmp_path.rglob("*.ckpt"))


def test_nothing_is_written_without_a_logger(tmp_path, monkeypatch, class_images):
    monkeypatch.chdir(tmp_path)
    fit("gmm", class_images)
    assert list(tmp_path.iterdir()) == []
