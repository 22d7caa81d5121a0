import pytest
import torch

from lit_repr.federated.priors import GaussianMixturePrior


@pytest.mark.parametrize("covariance_type", ["full", "diag", "spherical"])
def test_samples_look_like_the_class(digits, mean_distances, covariance_type):
    images, labels, _ = digits
    for cls in (0, 7):
        prior = GaussianMixturePrior((1, 8, 8), covariance_type=covariance_type)
        samples = prior.fit_data(images[labels == cls], seed=0).sample(300, torch.Generator().manual_seed(1))
        assert samples.shape == (300, 1, 8, 8) and samples.dtype == torch.float32
        assert float(samples.min()) >= 0 and float(samples.max()) <= 1
        dist = mean_distances(samples)
        others = torch.cat([dist[:cls], dist[cls + 1 :]])
        assert dist.argmin() == cls and dist[cls] < 0.2 * others.min(), dist
        # the samples vary like the class does (not a copy of the mean, not noise)
        real_std = images[labels == cls].std(0).mean()
        assert 0.5 * real_std < samples.std(0).mean() < 1.5 * real_std


def test_em_raises_the_likelihood_and_stops_at_tol(digits):
    images, labels, _ = digits
    prior = GaussianMixturePrior((1, 8, 8), tol=1e-3)
    x = images[labels == 4]
    prior.fit_data(x, seed=0, trainer_kwargs={"max_epochs": 1})
    z = prior._project_images(x)
    one_step = float(torch.logsumexp(prior._log_prob(z), 1).mean())
    prior.fit_data(x, seed=0, trainer_kwargs={"max_epochs": 200})
    z = prior._project_images(x)
    converged = float(torch.logsumexp(prior._log_prob(z), 1).mean())
    assert converged > one_step + 0.2
    assert prior.trainer.current_epoch < 200  # stopped at tol


def test_fewer_images_than_components_warns_and_fits():
    images = torch.rand(3, 1, 8, 8)
    prior = GaussianMixturePrior((1, 8, 8), num_components=5, num_pca_components=10)
    with pytest.warns(UserWarning, match="3 image"):
        prior.fit_data(images, seed=0)
    assert int((prior.weights > 0).sum()) == 3
    assert int((prior.pca_loadings.abs().sum(1) > 0).sum()) == 2  # rank of 3 centred images
    samples = prior.sample(50, torch.Generator().manual_seed(0))
    assert samples.shape == (50, 1, 8, 8) and torch.isfinite(samples).all()
    assert prior.tensors()["means"].shape == (5, 10)  # shapes follow the configuration, not the data


def test_one_image_gives_that_image():
    image = torch.rand(1, 1, 8, 8)
    prior = GaussianMixturePrior((1, 8, 8), num_components=1)
    prior.fit_data(image, seed=0)
    samples = prior.sample(4, torch.Generator().manual_seed(0))
    assert torch.allclose(samples, image.expand(4, -1, -1, -1), atol=1e-6)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_components": 0}, "num_components"),
        ({"num_pca_components": 65}, "num_pca_components must be at most C \\* H \\* W = 64"),
        ({"covariance_type": "tied"}, "covariance_type"),
        ({"reg_covar": 0.0}, "reg_covar"),
        ({"tol": -1.0}, "tol"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GaussianMixturePrior((1, 8, 8), **kwargs)


def test_a_real_digit_classifier_recognises_the_samples(accuracy_on_samples):
    assert accuracy_on_samples(lambda: GaussianMixturePrior((1, 8, 8))) > 0.95
