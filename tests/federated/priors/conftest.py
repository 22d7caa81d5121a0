import pytest
import torch


@pytest.fixture(scope="session")
def digits():
    """sklearn's 8 x 8 digits as ``(images (N, 1, 8, 8) in [0, 1], labels (N,), class means (10, 1, 8, 8))``."""
    from sklearn.datasets import load_digits

    data = load_digits()
    images = torch.tensor(data.images / 16.0, dtype=torch.float32)[:, None]
    labels = torch.tensor(data.target)
    means = torch.stack([images[labels == c].mean(0) for c in range(10)])
    return images, labels, means


@pytest.fixture(scope="session")
def mean_distances(digits):
    """Euclidean distance from the mean of some samples to each class mean image, ``(10,)``."""
    means = digits[2]
    return lambda samples: (samples.mean(0, keepdim=True) - means).flatten(1).norm(dim=1)


@pytest.fixture(scope="session")
def digit_classifier(digits):
    """An SVC trained on sklearn's digits (flattened, in [0, 1]): ``classifier.predict(samples (N, 64))``."""
    from sklearn.svm import SVC

    images, labels, _ = digits
    return SVC(gamma="scale").fit(images.flatten(1).numpy(), labels.numpy())


@pytest.fixture(scope="session")
def accuracy_on_samples(digits, digit_classifier):
    """Fit one prior per digit class (``make() -> prior``, seed = class), draw ``n`` samples of each and
    return the accuracy of the real-digit classifier on them."""

    def run(make, n=100, classes=range(10), trainer_kwargs=None):
        images, labels, _ = digits
        correct = total = 0
        for cls in classes:
            prior = make().fit_data(images[labels == cls], seed=cls, trainer_kwargs=trainer_kwargs)
            samples = prior.sample(n, torch.Generator().manual_seed(100 + cls))
            correct += int((digit_classifier.predict(samples.flatten(1).numpy()) == cls).sum())
            total += n
        return correct / total

    return run
