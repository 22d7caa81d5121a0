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
