import pytest
import torch

from lit_repr.federated.priors import VAEPrior


def test_samples_look_like_the_class_and_vary(digits, mean_distances):
    images, labels, _ = digits
    real = images[labels == 0]
    prior = VAEPrior((1, 8, 8))
    prior.fit_data(real, seed=0, trainer_kwargs={"max_epochs": 40})
    samples = prior.sample(300, torch.Generator().manual_seed(1))
    assert samples.shape == (300, 1, 8, 8) and samples.dtype == torch.float32
    assert float(samples.min()) >= 0 and float(samples.max()) <= 1
    dist = mean_distances(samples)
    assert dist.argmin() == 0 and dist[0] < 0.35 * dist[1:].min(), dist
    # not collapsed onto the mean image: the samples spread like the class does
    assert samples.std(0).mean() > 0.4 * real.std(0).mean()
    assert prior.trainer.callback_metrics["train/kl"] > 1.0


@pytest.mark.parametrize("image_shape", [(1, 28, 28), (3, 32, 32), (2, 10, 6)])
def test_other_image_sizes_train_and_sample(image_shape):
    prior = VAEPrior(image_shape, latent_dim=3, hidden_channels=4, batch_size=8)
    prior.fit_data(torch.rand(16, *image_shape), seed=0, trainer_kwargs={"max_steps": 2})
    assert prior.sample(3, torch.Generator().manual_seed(0)).shape == (3, *image_shape)
    mean, log_var = prior.encode(torch.rand(5, *image_shape))
    assert mean.shape == log_var.shape == (5, 3)


@pytest.mark.parametrize("decoder", ["bernoulli", "gaussian"])
def test_loss_falls_with_either_decoder_and_kl_warmup(digits, decoder):
    images, labels, _ = digits
    x = images[labels == 5][:64]
    prior = VAEPrior((1, 8, 8), latent_dim=4, hidden_channels=8, decoder=decoder, kl_warmup_epochs=5)
    losses = []
    for epochs in (1, 15):
        prior.fit_data(x, seed=0, trainer_kwargs={"max_epochs": epochs})
        losses.append(float(prior.trainer.callback_metrics["train/reconstruction"]))
    assert losses[1] < 0.9 * losses[0]


def test_kl_weight_rises_over_the_warmup():
    prior = VAEPrior((1, 8, 8), latent_dim=2, hidden_channels=4, batch_size=4, kl_warmup_epochs=2)
    seen = []
    original = prior._kl_weight
    prior._kl_weight = lambda: seen.append(original()) or seen[-1]
    prior.fit_data(torch.rand(8, 1, 8, 8), seed=0, trainer_kwargs={"max_epochs": 3})
    assert seen == [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"latent_dim": 0}, "latent_dim"),
        ({"decoder": "laplace"}, "decoder"),
        ({"decoder_std": 0.0}, "decoder_std"),
        ({"kl_warmup_epochs": -1}, "kl_warmup_epochs"),
        ({"lr": 0}, "lr"),
        ({"batch_size": 0}, "batch_size"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        VAEPrior((1, 8, 8), **kwargs)
