import numpy as np
import pytest
import torch

from lit_repr.data.sparse_coding import SparseCodingDataModule, random_dictionary, sample_sparse_codes


def test_batches_carry_codes_and_x_is_codes_times_dictionary():
    dm = SparseCodingDataModule(
        num_features=16, in_features=8, num_active=3, num_train=200, num_val=50, num_test=60, batch_size=32
    )
    dm.setup()
    assert {k: len(v) for k, v in dm.datasets.items()} == {"train": 200, "val": 50, "test": 60}
    t = dm.datasets["train"].tensors
    assert ((t["codes"] != 0).sum(1) == 3).all()
    assert (t["codes"] >= 0).all()
    assert torch.allclose(t["x"], t["codes"] @ dm.dictionary, atol=1e-5)
    assert torch.allclose(dm.dictionary.norm(dim=1), torch.ones(16), atol=1e-6)
    b = next(iter(dm.train_dataloader()))
    assert set(b) == {"x", "codes", "index"}
    assert dm.in_features == 8 and dm.num_features == 16 and dm.num_active == 3


def test_reproducible_and_dictionary_seed():
    a = SparseCodingDataModule(seed=3, num_train=10, num_val=0, num_test=0)
    b = SparseCodingDataModule(seed=3, num_train=10, num_val=0, num_test=0)
    a.setup(), b.setup()
    assert torch.equal(a.datasets["train"].tensors["x"], b.datasets["train"].tensors["x"])
    c = SparseCodingDataModule(seed=4, dictionary_seed=3, num_train=10, num_val=0, num_test=0)
    c.setup()
    assert torch.equal(a.dictionary, c.dictionary)  # same dictionary, new codes
    assert not torch.equal(a.datasets["train"].tensors["codes"], c.datasets["train"].tensors["codes"])
    assert not torch.equal(a.dictionary, SparseCodingDataModule(seed=4).dictionary)


def test_magnitudes_half_normal_and_uniform_firing():
    s = sample_sparse_codes(20000, 8, 2, np.random.default_rng(0))
    active = s[s != 0]
    assert abs(active.mean() - np.sqrt(2 / np.pi)) < 0.02
    freq = (s != 0).mean(0)
    assert np.allclose(freq, 2 / 8, atol=0.01)


def test_zipfian_firing_and_correlation():
    s = sample_sparse_codes(20000, 8, 1, np.random.default_rng(0), zipf_exponent=1.0)
    freq = (s != 0).mean(0)
    p = 1 / np.arange(1, 9)
    assert np.allclose(freq, p / p.sum(), atol=0.01)  # k=1: exactly the Zipf probabilities
    s0 = sample_sparse_codes(20000, 8, 2, np.random.default_rng(0), correlation=0.0, group_size=4)
    s1 = sample_sparse_codes(20000, 8, 2, np.random.default_rng(0), correlation=0.9, group_size=4)

    def same_group(s):
        idx = np.argwhere(s != 0)[:, 1].reshape(-1, 2)
        return np.mean(idx[:, 0] // 4 == idx[:, 1] // 4)

    assert same_group(s1) > same_group(s0) + 0.1
    assert ((s1 != 0).sum(1) == 2).all()


def test_random_dictionary_unit_norm():
    D = random_dictionary(10, 4, np.random.default_rng(1))
    assert np.allclose(np.linalg.norm(D, axis=1), 1)


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"num_active": 17}, "num_active must be <= num_features=16, got 17"),
        ({"num_features": 0}, "num_features must be a positive int, got 0"),
        ({"in_features": 0}, "in_features must be a positive int, got 0"),
        ({"num_train": 0}, "num_train must be a positive int, got 0"),
        ({"correlation": 1.0}, "correlation"),
        ({"zipf_exponent": -1.0}, "zipf_exponent"),
        ({"noise_std": -0.1}, "noise_std"),
        ({"num_val": -1}, "num_val must be an int >= 0, got -1"),
    ],
)
def test_bad_arguments(kw, match):
    with pytest.raises(ValueError, match=match):
        SparseCodingDataModule(**kw)


def test_bad_arguments_name_value_and_what_is_allowed():
    with pytest.raises(ValueError, match=r"correlation must be a finite number in \[0, 1\), got 1.0"):
        SparseCodingDataModule(correlation=1.0)
    with pytest.raises(ValueError, match="dictionary_seed must be an int >= 0, got -1"):
        SparseCodingDataModule(dictionary_seed=-1)
    with pytest.raises(ValueError, match="noise_std must be a finite number >= 0, got nan"):
        SparseCodingDataModule(noise_std=float("nan"))


def test_anisotropic_mixing_and_correlated_features():
    from lit_repr.data.sparse_coding import anisotropic_mixing

    plain = SparseCodingDataModule(num_features=12, in_features=6, num_active=2, num_train=2000, num_val=0,
                                   num_test=0, seed=3)
    mixed = SparseCodingDataModule(num_features=12, in_features=6, num_active=2, num_train=2000, num_val=0,
                                   num_test=0, seed=3, mixing_condition=30.0, correlation=0.8)
    plain.setup()
    mixed.setup()
    assert plain.mixing is None
    A = mixed.mixing
    assert abs(float(torch.linalg.cond(A)) - 30.0) < 1e-6
    # the dictionary is the mixed atoms, and x = codes · dictionary exactly
    torch.testing.assert_close(mixed.dictionary.double(), plain.dictionary.double() @ A, rtol=1e-5, atol=1e-6)
    tr = mixed.datasets["train"].tensors
    torch.testing.assert_close(tr["x"], tr["codes"] @ mixed.dictionary, rtol=1e-4, atol=1e-4)
    # the observations are anisotropic: the covariance's condition number is large
    ev = torch.linalg.eigvalsh(tr["x"].double().T.cov())
    assert float(ev[-1] / ev[0]) > 100
    # features in the same group fire together more often than across groups
    on = (tr["codes"] != 0).double()
    c = torch.corrcoef(on.T)
    assert float(c[0, 1]) > float(c[0, 5]) + 0.05
    with pytest.raises(ValueError, match="mixing_condition"):
        SparseCodingDataModule(mixing_condition=0.5)
    with pytest.raises(ValueError, match="condition"):
        anisotropic_mixing(3, 0.1, np.random.default_rng(0))
