import pytest
import torch

from lit_repr.federated.priors import DiffusionPrior

TINY = dict(block_out_channels=(8, 16), norm_num_groups=4, num_train_timesteps=100, num_inference_steps=10)


def test_a_short_fit_already_moves_samples_towards_the_class(digits, mean_distances):
    images, labels, _ = digits
    prior = DiffusionPrior((1, 8, 8), **{**TINY, "block_out_channels": (16, 32)}, lr=5e-3, ema_decay=0.0)
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


@pytest.mark.slow
def test_a_real_digit_classifier_recognises_the_samples(accuracy_on_samples):
    assert accuracy_on_samples(lambda: DiffusionPrior((1, 8, 8)), classes=(1, 4, 8)) > 0.8


def test_the_weight_average_replaces_the_weights_at_the_end():
    import lightning.pytorch as pl

    class Record(pl.Callback):
        def __init__(self):
            self.weights = []

        def on_train_start(self, trainer, module):
            self.weights.append(module.unet.conv_in.weight.detach().clone())

        def on_train_batch_end(self, trainer, module, *args):
            self.weights.append(module.unet.conv_in.weight.detach().clone())

    images = torch.rand(8, 1, 8, 8)
    record = Record()
    prior = DiffusionPrior((1, 8, 8), **TINY, ema_decay=0.15, batch_size=4)
    prior.fit_data(images, seed=0, trainer_kwargs={"max_steps": 4, "callbacks": [record]})
    expected = record.weights[0]
    for step, weights in enumerate(record.weights[1:]):
        decay = min(0.15, (1 + step) / (10 + step))
        expected = decay * expected + (1 - decay) * weights
    assert len(record.weights) == 5
    assert [prior.ema_weight(u) for u in range(3)] == [0.1, 0.15, 0.15]
    assert torch.allclose(prior.unet.conv_in.weight, expected, atol=1e-6)
    assert not torch.allclose(prior.unet.conv_in.weight, record.weights[-1], atol=1e-6)
    last = DiffusionPrior((1, 8, 8), **TINY, ema_decay=0.0, batch_size=4)
    last.fit_data(images, seed=0, trainer_kwargs={"max_steps": 4})
    assert torch.equal(last.unet.conv_in.weight, record.weights[-1])


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
        ({"ema_decay": 1.0}, "ema_decay"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DiffusionPrior((1, 8, 8), **kwargs)
