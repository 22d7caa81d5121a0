import pytest
import torch

from lit_repr.data import ModularArithmeticDataModule
from lit_repr.data.modular import modular_table


@pytest.mark.parametrize(
    "operation,fn",
    [
        ("add", lambda a, b, p: (a + b) % p),
        ("subtract", lambda a, b, p: (a - b) % p),
        ("multiply", lambda a, b, p: (a * b) % p),
        ("divide", lambda a, b, p: (a * pow(b, p - 2, p)) % p),  # Fermat: b^(p-2) = b^-1 mod prime p
    ],
)
def test_table_is_the_operation(operation, fn):
    p = 11
    ops, c = modular_table(p, operation)
    assert len(c) == (p * (p - 1) if operation == "divide" else p * p)
    assert all(int(ci) == fn(int(a), int(b), p) for (a, b), ci in zip(ops.tolist(), c))
    assert c.min() >= 0 and c.max() < p


@pytest.mark.parametrize("encoding", ["one_hot", "index"])
def test_splits_inputs_and_batches(encoding):
    p = 13
    dm = ModularArithmeticDataModule(modulus=p, operation="subtract", train_fraction=0.3, input_encoding=encoding,
                                     batch_size=32)
    dm.setup("fit")
    train, val = dm.datasets["train"].tensors, dm.datasets["val"].tensors
    assert len(train["y"]) == round(0.3 * p * p) and len(train["y"]) + len(val["y"]) == p * p
    pairs = {tuple(r) for r in train["operands"].tolist()}
    assert pairs.isdisjoint(tuple(r) for r in val["operands"].tolist())  # held-out pairs are never trained on
    b = next(iter(dm.train_dataloader()))
    assert set(b) == {"x", "y", "operands", "index"}
    if encoding == "one_hot":
        assert b["x"].shape == (32, 2 * p) and b["x"].dtype == torch.float32 and dm.in_features == 2 * p
        assert torch.equal(b["x"][:, :p].argmax(1), b["operands"][:, 0])
        assert torch.equal(b["x"][:, p:].argmax(1), b["operands"][:, 1])
        assert torch.all(b["x"].sum(1) == 2)
    else:
        assert b["x"].shape == (32, 2) and b["x"].dtype == torch.int64 and dm.in_features == 2
        assert torch.equal(b["x"], b["operands"])
    assert torch.equal(b["y"], (b["operands"][:, 0] - b["operands"][:, 1]) % p)
    assert dm.num_classes == p
    with pytest.raises(ValueError, match="no 'test' split"):  # the held-out pairs are the val split
        dm.test_dataloader()


def test_deterministic_per_seed():
    def train_pairs(seed):
        dm = ModularArithmeticDataModule(modulus=7, train_fraction=0.5, seed=seed)
        dm.setup()
        return dm.datasets["train"].tensors["operands"]

    assert torch.equal(train_pairs(0), train_pairs(0))
    assert not torch.equal(train_pairs(0), train_pairs(1))


@pytest.mark.parametrize(
    "kw,match",
    [
        ({"modulus": 1}, "modulus must be an int >= 2"),
        ({"modulus": 12, "operation": "divide"}, "needs a prime modulus"),
        ({"operation": "power"}, "operation must be one of"),
        ({"train_fraction": 1.0}, r"train_fraction must be a number in \(0, 1\)"),
        ({"train_fraction": 0.0}, "train_fraction"),
        ({"modulus": 2, "train_fraction": 0.01}, "empty train or held-out split"),
        ({"input_encoding": "binary"}, "input_encoding"),
    ],
)
def test_bad_arguments(kw, match):
    with pytest.raises(ValueError, match=match):
        ModularArithmeticDataModule(**kw)
