"""Run LinearProbe in 1 or 2 CPU processes (gloo) and save the fitted probes; used by test_probe_ddp.

Arguments: output path, number of processes, mode, strategy (``ddp`` or ``ddp_spawn``), data
(``digits``: dict batches with ``index``; ``tuples``: ``(x, y)`` batches without one), epochs. The
training split has 1437 samples and the validation split 359: odd, so DistributedSampler pads both
for 2 processes.
"""

import atexit
import sys
import warnings

import lightning.pytorch as pl
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, TensorDataset

from lit_repr.callbacks import LinearProbe
from lit_repr.data import DigitsDataModule
from lit_repr.models import Classifier


def ink(batch):  # module level, so the probe pickles for ddp_spawn
    return batch["x"].sum(1) if isinstance(batch, dict) else batch[0].sum(1)


def _close_gloo() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


class CloseGlooAtExit(pl.Callback):
    """Close gloo before a process's interpreter exits: ``ddp_spawn``'s workers never reach the end of
    ``main`` (which closes it in the ``ddp`` processes), and gloo's threads, left to the interpreter's
    shutdown, now and then abort the worker ("terminate called without an active exception")."""

    def teardown(self, trainer, pl_module, stage):
        atexit.register(_close_gloo)


def main(out: str, devices: int, mode: str, strategy: str = "ddp", data: str = "digits", epochs: str = "1") -> None:
    pl.seed_everything(0)
    tuples = data == "tuples"
    model = Classifier(in_features=64, hidden=[32], lr=1e-12, weight_decay=0.0,
                       **({"input_key": 0, "target_key": 1} if tuples else {}))
    probe = LinearProbe(
        ["backbone.0"],
        targets={"digit": 1 if tuples else "y", "ink": ink},
        task={"digit": "classification", "ink": "regression"},
        num_classes=10,
        mode=mode,
    )
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=devices,
        strategy=strategy if devices > 1 else "auto",
        max_epochs=int(epochs),
        callbacks=[probe, CloseGlooAtExit()],
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    dm = DigitsDataModule(batch_size=64, val_fraction=0.2, test_fraction=0.0006)  # splits of 1437, 359 and 1
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if tuples:
            dm.setup("fit")
            loaders = [DataLoader(TensorDataset(dm.datasets[s].tensors["x"], dm.datasets[s].tensors["y"]),
                                  batch_size=64) for s in ("train", "val")]
            trainer.fit(model, *loaders)
        elif mode == "frozen":
            trainer.validate(model, dm, verbose=False)
        else:
            trainer.fit(model, dm)
    keys = ("digit", "ink")
    counts = {}
    if probe.readouts:  # the fitting samples of all processes (a collective: every process takes part)
        local = torch.tensor([float(probe.readout("backbone.0", k).stats.n) for k in keys], dtype=torch.float64)
        if dist.is_initialized():
            dist.all_reduce(local)
        counts = dict(zip(keys, local.long().tolist()))
    if trainer.is_global_zero:
        result = {"scores": {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("probe/")},
                  "warnings": [str(w.message) for w in caught]}
        if probe.readouts:  # ddp_spawn fits in the spawned processes: only the logged values come back
            result |= {
                k: {
                    "weight": probe.readout("backbone.0", k).weight,
                    "bias": probe.readout("backbone.0", k).bias,
                    "n": counts[k],
                }
                for k in keys
            }
        torch.save(result, out)
    if dist.is_initialized():  # close gloo before the interpreter exits (its threads can abort the process otherwise)
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), *sys.argv[3:])
