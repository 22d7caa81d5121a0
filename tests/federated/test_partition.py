import numpy as np
import pytest
import torch

from lit_repr.federated.partition import (
    PARTITIONERS,
    Partition,
    as_labels,
    classes_per_client,
    dirichlet,
    silos,
)


def _labels(n=600, num_classes=10, seed=0):
    return np.random.default_rng(seed).integers(0, num_classes, n)


def _check_covers(p: Partition, labels, held=None):
    """Disjoint, sorted, and every index (of the held classes) exactly once."""
    merged = np.concatenate(p.indices)
    assert merged.size == np.unique(merged).size
    for idx in p.indices:
        assert np.all(np.diff(idx) > 0) and idx.dtype == np.int64
    expected = np.arange(len(labels)) if held is None else np.flatnonzero(np.isin(labels, held))
    np.testing.assert_array_equal(np.sort(merged), expected)


def _label_skew(p: Partition, labels) -> float:
    """Mean total variation distance between each client's label distribution and the global one."""
    counts = p.counts(labels).astype(float)
    local = counts / counts.sum(1, keepdims=True)
    overall = counts.sum(0) / counts.sum()
    return float(0.5 * np.abs(local - overall).sum(1).mean())


def test_silos_one_class_per_client_covering_everything():
    y = _labels()
    p = silos(y)
    assert p.num_clients == 10 and p.num_classes == 10
    _check_covers(p, y)
    assert [p.classes(i, y) for i in range(10)] == [(i,) for i in range(10)]
    np.testing.assert_array_equal(p.indices[3], np.flatnonzero(y == 3))


def test_silos_with_more_clients_splits_classes_and_keeps_one_class_each():
    y = _labels()
    p = silos(y, num_clients=16, seed=3)
    _check_covers(p, y)
    held = [p.classes(i, y) for i in range(16)]
    assert all(len(h) == 1 for h in held)
    assert held[:10] == [(i,) for i in range(10)]
    # the six extra clients hold six distinct classes, sharing each one's samples near-equally
    extra = [h[0] for h in held[10:]]
    assert len(set(extra)) == 6
    for cls in extra:
        sizes = [p.sizes[i] for i in range(16) if held[i] == (cls,)]
        assert len(sizes) == 2 and abs(sizes[0] - sizes[1]) <= 1 and sum(sizes) == np.sum(y == cls)


def test_silos_skips_absent_classes_but_keeps_their_index_space():
    y = np.array([0, 0, 3, 3, 5])
    p = silos(y)
    assert p.num_clients == 3 and p.num_classes == 6
    assert [p.classes(i, y) for i in range(3)] == [(0,), (3,), (5,)]


@pytest.mark.parametrize("num_clients,k", [(5, 2), (10, 3), (4, 10), (3, 4), (7, 1)])
def test_classes_per_client_exactly_k_classes_and_coverage(num_clients, k):
    y = _labels()
    p = classes_per_client(y, num_clients, k, seed=1)
    assert p.num_clients == num_clients
    assert all(len(p.classes(i, y)) == k for i in range(num_clients))
    holders = (p.counts(y) > 0).sum(0)
    if num_clients * k >= 10:
        _check_covers(p, y)  # every class held, every sample placed once
        assert holders.min() >= 1
    # classes are held by floor or ceil of num_clients * k / num_classes clients
    assert holders.max() - holders.min() <= 1
    # the samples of a class are split near-equally among its holders
    counts = p.counts(y)
    for cls in range(10):
        held = counts[:, cls][counts[:, cls] > 0]
        if held.size:
            assert held.max() - held.min() <= 1 and held.sum() == np.sum(y == cls)


def test_classes_per_client_leaves_out_classes_nobody_holds():
    y = _labels()
    p = classes_per_client(y, num_clients=3, k=2, seed=0)
    held = sorted({c for i in range(3) for c in p.classes(i, y)})
    assert len(held) == 6
    _check_covers(p, y, held=held)


def test_dirichlet_covers_and_respects_min_size():
    y = _labels(1000)
    p = dirichlet(y, 8, alpha=0.3, seed=0, min_size=20)
    _check_covers(p, y)
    assert min(p.sizes) >= 20


def test_dirichlet_small_alpha_is_skewed_large_alpha_near_uniform():
    y = _labels(3000)
    skew = {a: _label_skew(dirichlet(y, 10, alpha=a, seed=0), y) for a in (0.05, 1.0, 1000.0)}
    # measured (seed 0): 0.78 at alpha=0.05, 0.37 at alpha=1 and 0.014 at alpha=1000
    assert skew[0.05] > 0.6
    assert 0.15 < skew[1.0] < skew[0.05]
    assert skew[1000.0] < 0.08
    # small alpha: most clients are dominated by few classes
    counts = dirichlet(y, 10, alpha=0.05, seed=0).counts(y)
    top = counts.max(1) / counts.sum(1)
    assert np.median(top) > 0.5


def test_dirichlet_impossible_min_size_gives_up_with_a_clear_error():
    y = _labels(100, num_classes=2)
    with pytest.raises(ValueError, match=r"could not give every one of 20 clients min_size=5 .*max_attempts=3"):
        dirichlet(y, 20, alpha=0.01, min_size=5, max_attempts=3)
    with pytest.raises(ValueError, match=r"min_size must be at most len\(labels\) / num_clients = 100 / 20, got 6"):
        dirichlet(y, 20, alpha=1.0, min_size=6)


@pytest.mark.parametrize(
    "name,kwargs",
    [
        ("silos", {}),
        ("classes_per_client", {"num_clients": 6, "k": 3}),
        ("dirichlet", {"num_clients": 6, "alpha": 0.5}),
    ],
)
def test_deterministic_per_seed(name, kwargs):
    y = _labels()
    fn = PARTITIONERS[name]
    a, b = fn(y, seed=5, **kwargs), fn(y, seed=5, **kwargs)
    assert a == b
    if name != "silos":  # with as many silos as classes the partition does not depend on the seed
        assert a != fn(y, seed=6, **kwargs)


def test_accepts_torch_and_lists():
    y = _labels(60, 3)
    assert silos(torch.from_numpy(y)) == silos(y) == silos(y.tolist())
    assert Partition(silos(y).indices, 3).classes(1, torch.from_numpy(y)) == (1,)


def test_table_content():
    y = np.array([0, 1, 1, 2, 2, 2, 0, 1])
    p = Partition((np.array([0, 1, 2]), np.array([3, 4, 5, 6, 7])), num_classes=3)
    lines = p.table(y).splitlines()
    assert lines[0].split() == ["client", "|", "0", "1", "2", "|", "total"]
    assert lines[2].split() == ["0", "|", "1", "2", ".", "|", "3"]
    assert lines[3].split() == ["1", "|", "1", "1", "3", "|", "5"]
    assert lines[-1].split() == ["total", "|", "2", "3", "3", "|", "8"]
    np.testing.assert_array_equal(p.counts(y), [[1, 2, 0], [1, 1, 3]])


def test_partition_is_frozen_and_validates():
    p = Partition((np.array([2, 0][::-1]), np.array([1])), num_classes=2)
    with pytest.raises(ValueError):  # read-only arrays
        p.indices[0][0] = 5
    with pytest.raises(AttributeError):
        p.num_classes = 3  # type: ignore[misc]
    with pytest.raises(ValueError, match="disjoint"):
        Partition((np.array([0, 1]), np.array([1])), num_classes=2)
    with pytest.raises(ValueError, match=r"indices\[0\] must be sorted"):
        Partition((np.array([1, 0]),), num_classes=2)
    with pytest.raises(ValueError, match="num_classes must be a positive int"):
        Partition((np.array([0]),), num_classes=0)
    with pytest.raises(ValueError, match=r"client must be an int in \[0, 2\), got 2"):
        p.classes(2, [0, 1, 0])
    with pytest.raises(ValueError, match="labels has 2 entries but the partition indexes sample 2"):
        p.classes(0, [0, 1])
    with pytest.raises(ValueError, match=r"labels must be in \[0, 2\)"):
        p.table([0, 1, 5])


def test_bad_inputs_name_argument_and_allowed_values():
    y = _labels(60, 3)
    with pytest.raises(ValueError, match="num_clients must be a positive int, got 0"):
        dirichlet(y, 0, alpha=1.0)
    with pytest.raises(ValueError, match="num_clients must be a positive int, got 0"):
        classes_per_client(y, 0, k=1)
    with pytest.raises(ValueError, match=r"num_clients must be >= the number of classes present \(3\)"):
        silos(y, num_clients=2)
    with pytest.raises(ValueError, match=r"k must be an int in \[1, 3\] .* got 4"):
        classes_per_client(y, 4, k=4)
    with pytest.raises(ValueError, match=r"k must be an int in \[1, 3\] .* got 0"):
        classes_per_client(y, 4, k=0)
    for alpha in (0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="alpha must be a finite number > 0"):
            dirichlet(y, 3, alpha=alpha)
    with pytest.raises(ValueError, match="1-D array of integer class indices, got shape"):
        silos(y.reshape(-1, 1))
    with pytest.raises(ValueError, match="got dtype float"):
        silos(y.astype(np.float32))
    with pytest.raises(ValueError, match="class indices >= 0, got a minimum of -1"):
        silos(np.array([0, -1, 1]))
    with pytest.raises(ValueError, match="at least one label"):
        silos(np.array([], dtype=np.int64))
    with pytest.raises(ValueError, match="class 1 has 1 sample.* 2 clients hold it"):
        silos(np.array([0, 0, 1]), num_clients=4)
    assert as_labels(np.array([1, 2], dtype=np.uint8)).dtype == np.int64


def test_num_classes_covers_classes_missing_from_the_labels():
    y = np.array([0, 0, 1, 1, 2, 2])
    assert silos(y).num_classes == 3
    for p in (silos(y, num_classes=8), classes_per_client(y, 3, k=1, num_classes=8),
              dirichlet(y, 2, alpha=1.0, min_size=1, num_classes=8)):
        assert p.num_classes == 8 and p.counts(y).shape[1] == 8
    with pytest.raises(ValueError, match="num_classes must exceed every label, got 2 with a label 2"):
        dirichlet(y, 2, alpha=1.0, min_size=1, num_classes=2)
