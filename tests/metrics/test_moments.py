import pytest
import torch
from sklearn.metrics import r2_score

from lit_repr.metrics import CovarianceMoments, LinearCKA, MeanCorrelationCoefficient, StreamingRidge
from lit_repr.metrics.moments import CentredR2Score


def _data(n=240, seed=0, offset=0.0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 5, generator=g, dtype=torch.float64) @ torch.randn(5, 5, generator=g, dtype=torch.float64)
    y = x[:, :3] + 0.5 * torch.randn(n, 3, generator=g, dtype=torch.float64)
    return x + offset, y - 2 * offset


METRICS = {
    "ridge": (lambda: StreamingRidge(5, 3), lambda m: m.compute().weight),
    "mcc": (lambda: MeanCorrelationCoefficient(3, 5), lambda m: m.compute().corr),
    "cka": (lambda: LinearCKA(5, 3), lambda m: m.compute()),
    "cka_debiased": (lambda: LinearCKA(5, 3, debiased=True), lambda m: m.compute()),
    "covariance": (lambda: CovarianceMoments(5), lambda m: torch.cat([m.compute()[0], m.compute()[1].flatten()])),
    "r2": (lambda: CentredR2Score(3), lambda m: m.compute()),
}


def _feed(m, name, x, y):
    if name == "covariance":
        m.update(x)
    elif name == "mcc":
        m.update(y, x)
    elif name == "r2":
        m.update(x[:, :3], y)
    else:
        m.update(x, y)


@pytest.mark.parametrize("name", list(METRICS))
def test_parts_with_different_references_merge_exactly(name):
    make, result = METRICS[name]
    x, y = _data()
    whole = make()
    _feed(whole, name, x, y)
    # three parts whose references (first-batch means) differ; one part is empty
    parts = [make() for _ in range(4)]
    for m, (lo, hi) in zip(parts, [(0, 7), (7, 150), (150, 240)]):
        for xb, yb in zip(x[lo:hi].split(31), y[lo:hi].split(31)):
            _feed(m, name, xb, yb)
    merged = parts[3]  # empty: its references are zeros
    for m in parts[:3]:
        merged.merge_state(m)
    torch.testing.assert_close(result(merged), result(whole), rtol=1e-10, atol=1e-10)
    # forward(): batch value and accumulated states (merged through the same rule)
    fwd = make()
    for xb, yb in zip(x.split(50), y.split(50)):
        if name == "covariance":
            fwd(xb)
        elif name == "mcc":
            fwd(yb, xb)
        elif name == "r2":
            fwd(xb[:, :3], yb)
        else:
            fwd(xb, yb)
    torch.testing.assert_close(result(fwd), result(whole), rtol=1e-10, atol=1e-10)


def test_moved_states_equal_direct_accumulation_about_the_new_reference():
    x, y = _data(offset=3.0)
    m = LinearCKA(5, 3, debiased=True)
    for xb, yb in zip(x.split(40), y.split(40)):
        m.update(xb, yb)
    zero = {"x": torch.zeros(5, dtype=torch.float64), "y": torch.zeros(3, dtype=torch.float64)}
    raw = m.moments_about(zero)
    a, b = (x * x).sum(1), (y * y).sum(1)
    want = {"sx": x.sum(0), "xtx": x.T @ x, "xty": x.T @ y, "sa": a.sum(), "saa": (a * a).sum(), "sab": (a * b).sum(),
            "sax": a @ x, "sbx": b @ x, "say": a @ y, "sby": b @ y, "sbb": (b * b).sum()}
    for k, v in want.items():
        torch.testing.assert_close(raw[k], v, rtol=1e-10, atol=1e-8, msg=k)


@pytest.mark.parametrize("offset", [0.0, 1e8])
def test_centred_r2_equals_sklearn_with_target_offsets(offset):
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 10, (500, 2), generator=g).double() + offset
    p = y + torch.randn(500, 2, generator=g, dtype=torch.float64)
    m = CentredR2Score(2)
    for pb, yb in zip(p.split(64), y.split(64)):
        m.update(pb, yb)
    want = r2_score(y.numpy(), p.numpy(), multioutput="raw_values")
    torch.testing.assert_close(m.compute(), torch.as_tensor(want), rtol=1e-9, atol=1e-9)
    const = CentredR2Score()
    const.update(torch.ones(3), torch.ones(3))
    assert torch.isnan(const.compute())
    with pytest.raises(ValueError, match="same shape"):
        m.update(torch.ones(3, 2), torch.ones(3))
    with pytest.raises(ValueError, match="num_outputs"):
        CentredR2Score(0)


def test_checkpoint_of_raw_moments_loads_as_moments_about_zero():
    """A state_dict written before the references existed (raw sums) resumes exactly."""
    x, y = _data(offset=1.0)
    fresh = StreamingRidge(5, 3)
    fresh.persistent(True)
    fresh.update(x, y)
    legacy = {"n": torch.tensor(240.0, dtype=torch.float64), "sum_x": x.sum(0), "sum_y": y.sum(0),
              "xtx": x.T @ x, "xty": x.T @ y, "yy": (y * y).sum(0)}
    resumed = StreamingRidge(5, 3)
    resumed.persistent(True)
    resumed.update(x[:10] + 100, y[:10])  # stale states with other references must be replaced
    resumed.load_state_dict(legacy)
    assert torch.equal(resumed.x_ref, torch.zeros(5, dtype=torch.float64))
    torch.testing.assert_close(resumed.compute().weight, fresh.compute().weight, rtol=1e-9, atol=1e-9)
    # and a current checkpoint round-trips with its references
    again = StreamingRidge(5, 3)
    again.persistent(True)
    again.load_state_dict(fresh.state_dict())
    assert torch.equal(again.x_ref, fresh.x_ref)
    torch.testing.assert_close(again.compute().weight, fresh.compute().weight)


def test_two_processes_with_different_references_equal_one(run_ddp_script):
    import pathlib

    out = run_ddp_script(pathlib.Path(__file__).parent / "ddp_moments_script.py")
    for name, (one, two) in out.items():
        torch.testing.assert_close(two, one, rtol=1e-9, atol=1e-9, msg=name)


@pytest.mark.parametrize("width", [3, 64, 130])
def test_add_gram_is_the_exactly_symmetric_full_product(width):
    from lit_repr.metrics.moments import add_gram

    u = torch.randn(37, width, dtype=torch.float64)
    start = torch.randn(width, width, dtype=torch.float64)
    start = start + start.T
    out = add_gram(start.clone(), u)
    torch.testing.assert_close(out, start + u.T @ u, rtol=1e-12, atol=1e-12)
    assert torch.equal(out, out.T)


def test_a_large_batch_accumulated_in_row_blocks_equals_small_batches(monkeypatch):
    from lit_repr.metrics import moments

    x, y = _data(n=600, offset=1e3)
    whole = StreamingRidge(5, 3)
    monkeypatch.setattr(moments, "_CHUNK_ELEMENTS", 8)  # blocks of 1,024 rows would hold it whole: force 3 blocks
    monkeypatch.setattr(moments, "_GRAM_BLOCK_ELEMENTS", 8)  # (and of the one-Gram path: blocks of 256 rows)
    monkeypatch.setattr(moments, "_REFERENCE_ROWS", 250)
    whole.update(x.float(), y)
    parts = StreamingRidge(5, 3)
    for xb, yb in zip(x.float().split(250), y.split(250)):
        parts.update(xb, yb)
    for name in ("n", "sum_x", "sum_y", "xtx", "xty", "yy", "x_ref", "y_ref"):
        torch.testing.assert_close(getattr(whole, name), getattr(parts, name), rtol=1e-12, atol=1e-9)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_one_gram_path_equals_separate_products(monkeypatch, dtype):
    # one dsyrk of [x - r | y - s | 1] per block gives every sum and product; the column-block path is the reference
    from lit_repr.metrics import moments

    x, y = _data(n=700, offset=1e3)
    monkeypatch.setattr(moments, "_GRAM_BLOCK_ELEMENTS", 8)  # several blocks of 256 rows
    gram = StreamingRidge(5, 3)
    assert gram._one_gram({"x": x, "y": y})
    for xb, yb in zip(x.to(dtype).split(300), y.split(300)):
        gram.update(xb, yb)
    monkeypatch.setattr(moments, "_dsyrk", None)
    separate = StreamingRidge(5, 3)
    assert not separate._one_gram({"x": x, "y": y})
    for xb, yb in zip(x.to(dtype).split(300), y.split(300)):
        separate.update(xb, yb)
    for name in ("n", "sum_x", "sum_y", "xtx", "xty", "yy", "x_ref", "y_ref"):
        torch.testing.assert_close(getattr(gram, name), getattr(separate, name), rtol=1e-12, atol=1e-9, msg=name)
    assert torch.equal(gram.xtx, gram.xtx.T)


def test_the_one_gram_path_is_declined_when_most_of_the_gram_is_unused():
    # 1,000 one-hot targets on 64 features: the targets' own 1,000 x 1,000 block would dominate
    wide = StreamingRidge(64, 1000)
    assert not wide._one_gram({"x": torch.zeros(4, 64), "y": torch.zeros(4, 1000)})
    assert StreamingRidge(64, 10)._one_gram({"x": torch.zeros(4, 64), "y": torch.zeros(4, 10)})
    assert not StreamingRidge(64, 10, float32_products=True)._one_gram(
        {"x": torch.zeros(4, 64), "y": torch.zeros(4, 10, dtype=torch.float64)}
    )


def test_add_gram_by_dsyrk_and_by_column_blocks_agree(monkeypatch):
    from lit_repr.metrics import moments

    u = torch.randn(300, 150, dtype=torch.float64)
    by_syrk = moments.add_gram(torch.zeros(150, 150, dtype=torch.float64), u)
    monkeypatch.setattr(moments, "_dsyrk", None)
    by_blocks = moments.add_gram(torch.zeros(150, 150, dtype=torch.float64), u)
    torch.testing.assert_close(by_syrk, by_blocks, rtol=1e-12, atol=1e-12)
    assert torch.equal(by_syrk, by_syrk.T)


def test_product_states_have_an_expanded_default_and_reset_to_dense_zeros():
    m = StreamingRidge(300, 2)
    assert m._defaults["xtx"].stride() == (0, 0)  # no 300 x 300 default held
    m.update(torch.randn(50, 300), torch.randn(50, 2))
    m.reset()
    assert m.xtx.shape == (300, 300) and m.xtx.is_contiguous() and float(m.xtx.abs().sum()) == 0
    m.update(torch.randn(50, 300), torch.randn(50, 2))  # in-place accumulation works after the reset
    assert float(m.n) == 50
    state = m.state_dict()
    assert "xtx" not in state or state["xtx"].is_contiguous()


@pytest.mark.parametrize("gram", [True, False])
def test_add_checked_names_the_variables_at_fault_and_changes_nothing(gram):
    from lit_repr.metrics.moments import NonFiniteBatch, ShiftedMoments

    class Pair(ShiftedMoments):
        def __init__(self):
            super().__init__()
            self.add_moments(variables={"a": ("sum_a", 3), "b": ("sum_b", 2)}, products={"ab": ("a", "b")},
                             elementwise={"aa": ("a", "a")} if gram else {})
            self.float32_products = not gram  # float32 batches then take the per-variable path

        def update(self, a, b):
            self.add_checked(a=a, b=b)

        def compute(self):
            return self.centred()

    g = torch.Generator().manual_seed(0)
    dtype = torch.float64 if gram else torch.float32
    a, b = torch.randn(40, 3, generator=g, dtype=dtype), torch.randn(40, 2, generator=g, dtype=dtype)
    m, clean = Pair(), Pair()
    assert m._one_gram({"a": a, "b": b}) == gram
    bad_b = b.clone()
    bad_b[39, 1] = float("-inf")
    with pytest.raises(NonFiniteBatch, match="the batch of 'b' contains NaN or inf") as err:
        m.update(a, bad_b)
    assert err.value.variables == ["b"] and not err.value.overflow
    assert float(m.n) == 0 and all(bool((v == 0).all()) for v in m.metric_state.values())
    m.update(a, b)
    clean.update(a, b)
    for k, v in clean.metric_state.items():
        assert torch.equal(m.metric_state[k], v), k


@pytest.mark.parametrize("d", [1, 5, 255, 256, 257, 600])
def test_blockwise_symmetrise_mirror_and_centring_equal_the_plain_expressions(d):
    # the d x d bookkeeping done block by block (or into one new tensor) gives bitwise the values of the
    # plain expressions it replaces, on sizes around the block edges
    from lit_repr.metrics.moments import _add_mirrored, _less_outer, symmetrise_

    g = torch.Generator().manual_seed(d)
    a = torch.randn(d, d, generator=g, dtype=torch.float64)
    assert torch.equal(symmetrise_(a.clone()), (a + a.T) / 2)
    upper, out = torch.randn(d, d, generator=g, dtype=torch.float64).triu_(), a.clone()
    assert torch.equal(_add_mirrored(out, upper), a.clone().add_(upper).add_(upper.T.tril(-1)))
    s, n = torch.randn(d, generator=g, dtype=torch.float64), torch.tensor(7.0, dtype=torch.float64)
    assert torch.equal(_less_outer(a, s, s, n), a - torch.outer(s, s) / n)
