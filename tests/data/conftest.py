import pytest
import torch


@pytest.fixture
def check_seeded():
    """``check(make, splits)``: ``make(seed)`` gives a datamodule whose arrays of ``splits`` are equal for equal
    seeds (every key) and differ in ``x`` and ``latents`` for different seeds."""

    def check(make, splits=("train", "ood")):
        def arrays(seed):
            dm = make(seed)
            dm.setup()
            return [dm.arrays(split) for split in splits]

        a, b, c = arrays(0), arrays(0), arrays(1)
        for split in range(len(splits)):
            for k in a[split]:
                assert torch.equal(a[split][k], b[split][k]), k
            assert not torch.equal(a[split]["x"], c[split]["x"])
            assert not torch.equal(a[split]["latents"], c[split]["latents"])

    return check
