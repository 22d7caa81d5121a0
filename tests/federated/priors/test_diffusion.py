import pytest
import torch

from lit_repr.federated.priors import DiffusionPrior

TINY = dict(block_out_channels=(8, 16), norm_num_groups=4, num_train_timesteps=100, num_inference_steps=10)


def test_a_short_fit_already_moves_samples_towards_the_class(digits, mean_distances):
    images, labels, _ = digits
    prior = DiffusionPrior((1, 8, 8), **{**TINY, "block_out_channels": (16, 32)}, lr=5e-3)
    prior.fit_data(images[labels == 0], seed=0, trainer_kwargs={"max_steps": 60})
    samples = prior.sample(100, torch.Generator().manual_seed(1))
    assert samples.shape == (100, 1, 8, 8) and samples.dtype == torch.float32
    assert float(samples.min()) >= 0 and float(samples.max()) <= 1
    dist = mean_distances(samples)
    assert dist.argmin() == 0 and dist[0] < 0.7 * dist[1:].min(), dist
    assert prior.trainer.callback_metrics["train/loss"] < 0.5


@pytest.mark.slow
def test_a_longer_fit_gives_class_like_samples(digits, mean_distances):
    images, labels, _ = digits
    prior = DiffusionPrior((1, 8, 8))
    prior.fit_data(images[labels == 0], seed=0)
    samples = prior.sample(200, torch.Generator().manual_seed(1))
    dist = mean_distances(samples)
    assert dist.argmin() == 0 and dist[0] < 0.3 * dist[1:].min(), dist
    assert samples.std(0).mean() > 0.5 * images[labels == 0].std(0).mean()


@pytest.mark.parametrize(
    "image_shape, blocks, padded",
    [((1, 28, 28), (8, 16), (28, 28)), ((3, 32, 32), (8, 16), (32, 32)), ((1, 10, 6), (4, 8, 8), (12, 8))],
)
def test_sizes_and_padding(image_shape, blocks, padded):
    prior = DiffusionPrior(image_shape, **{**TINY, "block_out_channels": blocks, "num_inference_steps": 2})
    assert prior._padded == padded
    prior.fit_data(torch.rand(4, *image_shape), seed=0, trainer_kwargs={"max_steps": 1})
    assert prior.sample(2, torch.Generator().manual_seed(0)).shape == (2, *image_shape)


def test_attention_in_the_middle_block_trains():
    prior = DiffusionPrior((1, 8, 8), **TINY, attention=True)
    assert any("attentions" in name for name in prior.tensors())
    prior.fit_data(torch.rand(4, 1, 8, 8), seed=0, trainer_kwargs={"max_steps": 1})
    assert prior.sample(1, torch.Generator().manual_seed(0)).shape == (1, 1, 8, 8)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"block_out_channels": ()}, "block_out_channels"),
        ({"block_out_channels": (8, 0)}, "block_out_channels"),
        ({"block_out_channels": (8, 12), "norm_num_groups": 8}, "norm_num_groups must divide"),
        ({"layers_per_block": 0}, "layers_per_block"),
        ({"attention": "yes"}, "attention"),
        ({"num_train_timesteps": 1}, "num_train_timesteps"),
        ({"beta_schedule": "cosine"}, "beta_schedule"),
        ({"num_inference_steps": 2000}, "num_inference_steps must be at most"),
        ({"lr": -1}, "lr"),
        ({"batch_size": 0}, "batch_size"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DiffusionPrior((1, 8, 8), **kwargs)
