"""The new readout of TapCallback's docstring (the mean feature norm per site), shared by the tests."""

import torch
from torchmetrics import Metric

from lit_repr.callbacks import TapCallback


class MeanNorm(Metric):
    def __init__(self):
        super().__init__()
        self.add_state("total", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, features):
        self.total += features.norm(dim=1).sum()
        self.count += features.shape[0]

    def compute(self):
        return self.total / self.count


class NormMonitor(TapCallback):
    def make_readouts(self, site, target, in_features, target_features):
        return {"mean_norm": MeanNorm()}
