import pytest
from lit_repr_flower import FlowerFederation


def tiny(tmp_path, **overrides) -> FlowerFederation:
    """Digits silos over 4 classes (4 clients), a small GMM prior and a small classifier: seconds per step."""
    settings = dict(
        classes=4, prior="gmm", prior_config={"num_components": 2, "num_pca_components": 8},
        prior_trainer={"max_epochs": 10}, classifier={"hidden": [32]}, classifier_trainer={"max_epochs": 3},
        samples_per_class=50, run_dir=str(tmp_path / "run"), connect_timeout=120.0,
    )
    settings.update(overrides)
    return FlowerFederation(**settings)


@pytest.fixture
def federation(tmp_path):
    return tiny(tmp_path)


@pytest.fixture
def make_federation(tmp_path):
    """``make_federation(**overrides)``: the tiny federation with some settings changed."""
    return lambda **overrides: tiny(tmp_path, **overrides)
