"""The online LinearProbe inside a run: time in its hooks per training step and per validation.

    python benchmarks/bench_probe_online.py [--repeats 3] [--wide-epochs 2] [--profile]

Prints measurements; nothing here is a pass/fail test.
1. Quickstart (MLP 64 -> 128 -> 128 on digits, 15 epochs, batch 64, the probe on both hidden
   layers): the per-validation fixed cost, split into the solve (``on_validation_epoch_start``),
   the scoring of the validation batches and the report (``on_validation_epoch_end``: scores and
   logging), the time per training step, and the whole-run wall-time ratio with/without the probe
   (aim: fixed cost <= 3 ms per validation, ratio < 1.05).
2. A wide site: the same run with one hidden layer of 2048 features, the probe on it; the time
   inside the probe's hooks per training step as a fraction of the step (the step measured in the
   run without the probe), and the per-validation cost (the GCV solve of a 2049 x 2049 system).
The accumulation of buffered training rows is split between the training steps (a block of
``buffer_rows`` rows fills) and the solve at validation (the rows still buffered).
``--profile`` adds the top functions of a cProfile of the probe's validation hooks (quickstart).

The rows of the last, partial block of an epoch are accumulated in its last training step (the
readouts' ``flush()``), so the accumulation column holds every training row and the solve at
validation none: the same work as before, counted where it is done.

Measured on 2 cores, this script with the library before and after the changes below, alternating
(before, after, before, after; best of 3 each), on a quiet machine (training steps of 1.4 ms):
quickstart: fixed cost per validation 4.70 / 4.36 ms (of which 0.59 / 0.56 ms accumulating the rows
still buffered) -> 2.56 / 2.55 ms (solve 1.44 ms, report 1.12 ms); whole-run ratio 1.30 / 1.22 ->
1.19 / 1.19. Wide site (2,048 features, 1,258 rows per epoch: fewer samples than features): 511 /
505 ms per validation (89 / 92 ms of it accumulating rows) -> 266 / 268 ms; whole-run ratio 8.9 /
9.8 -> 7.6 / 7.6. When the machine ran slower (steps of 1.5-2.4 ms) the quickstart's fixed cost
was 5.2-5.8 ms before and 3.0-3.9 ms after.
The changes: GCV's degrees of freedom from two LDLᵀ factorisations of the tridiagonal systems (no
eigenvalues), the small arrays of the solve and AUROC's sort in numpy, scipy's ``dormqr``, an
accuracy of two counts, and the epoch's rows accumulated in its last training step.
Later, the same way, before and after the d x d bookkeeping without full-size temporaries (centring
into one new tensor, the symmetrisation and the mirror of the dsyrk triangle block by block) and the
quickstart classifier's accuracy updated instead of called: wide site 261 / 270 -> 212 / 201 ms per
validation, 5.4 / 5.4 -> 4.3 / 4.4 ms in the hooks per training step, whole-run ratio 7.8 / 7.4 ->
6.8 / 6.3; quickstart without the probe 0.68 / 0.66 -> 0.62 / 0.63 s, with it 0.81 / 0.78 -> 0.74 /
0.77 s, ratio 1.19 / 1.19 -> 1.20 / 1.22 (the run without the probe gained more), fixed cost 2.46 /
2.27 -> 2.37 / 2.65 ms (noise).
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time
import warnings

import lightning.pytorch as pl
import torch
from machine import describe

from lit_repr.callbacks import LinearProbe
from lit_repr.data import DigitsDataModule
from lit_repr.metrics.ridge import StreamingRidge
from lit_repr.models import Classifier

warnings.filterwarnings("ignore")

PARTS = {
    "train step": ("on_train_batch_start", "on_train_batch_end", "on_train_epoch_start"),
    "solve": ("on_validation_epoch_start",),
    "val batches": ("on_validation_batch_start", "on_validation_batch_end"),
    "report": ("on_validation_epoch_end",),
}


class HookTimer:
    """Wall time inside a callback's hooks, per part of :data:`PARTS` (optionally under cProfile)."""

    def __init__(self, callback, profiler: cProfile.Profile | None = None) -> None:
        self.seconds = dict.fromkeys(PARTS, 0.0)
        self.profiler = profiler
        self.current: str | None = None  # the part whose hook is running
        for part, hooks in PARTS.items():
            for hook in hooks:
                setattr(callback, hook, self._timed(getattr(callback, hook), part))

    def _timed(self, fn, part):
        profile = self.profiler is not None and part != "train step"

        def wrapper(*args, **kwargs):
            if profile:
                self.profiler.enable()
            t0 = time.perf_counter()
            self.current = part
            try:
                return fn(*args, **kwargs)
            finally:
                self.current = None
                self.seconds[part] += time.perf_counter() - t0
                if profile:
                    self.profiler.disable()

        return wrapper


class StepTimer(pl.Callback):
    """Wall time of the training steps (from ``on_train_batch_start`` to ``on_train_batch_end``)."""

    def __init__(self) -> None:
        self.seconds, self.steps, self._t0 = 0.0, 0, 0.0

    def on_train_batch_start(self, *args) -> None:
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, *args) -> None:
        self.seconds += time.perf_counter() - self._t0
        self.steps += 1


class UpdateTimer:
    """Wall time inside ``StreamingRidge._accumulate`` (the accumulation of buffered training rows), per part
    of :data:`PARTS` whose hook runs it (training steps, or the solve at validation)."""

    def __init__(self, hooks: HookTimer) -> None:
        self.seconds = dict.fromkeys(PARTS, 0.0)
        self._update = StreamingRidge._accumulate
        timer = self

        def update(self, x, y, **kwargs):
            t0 = time.perf_counter()
            try:
                return timer._update(self, x, y, **kwargs)
            finally:
                if hooks.current is not None:
                    timer.seconds[hooks.current] += time.perf_counter() - t0

        StreamingRidge._accumulate = update

    def remove(self) -> None:
        StreamingRidge._accumulate = self._update


def run(callbacks, hidden, epochs) -> tuple[float, pl.Trainer]:
    pl.seed_everything(0)
    model = Classifier(num_classes=10, in_features=64, hidden=hidden, lr=3e-3, max_epochs_hint=epochs)
    trainer = pl.Trainer(
        max_epochs=epochs, callbacks=callbacks, logger=False, enable_progress_bar=False,
        enable_checkpointing=False, enable_model_summary=False, accelerator="cpu", num_sanity_val_steps=0,
    )
    t0 = time.perf_counter()
    trainer.fit(model, DigitsDataModule(batch_size=64))
    return time.perf_counter() - t0, trainer


def case(title: str, sites, hidden, epochs: int, repeats: int, profiler=None) -> None:
    bases, probed, timers, steps_t, updates = [], [], [], [], []
    for _ in range(repeats):  # interleaved, so that a load change on the machine hits both alike
        step_timer = StepTimer()
        bases.append(run([step_timer], hidden, epochs)[0])
        steps_t.append(step_timer.seconds / step_timer.steps)
        probe = LinearProbe(sites, targets={"digit": "y"})
        timers.append(HookTimer(probe, profiler))
        updates.append(UpdateTimer(timers[-1]))
        try:
            t, trainer = run([probe], hidden, epochs)
        finally:
            updates[-1].remove()
        probed.append(t)
    base, with_probe, step = min(bases), min(probed), min(steps_t)
    steps, vals = trainer.global_step, epochs
    best = {p: min(t.seconds[p] for t in timers) for p in PARTS}
    accumulate = min(u.seconds["solve"] for u in updates) / vals
    accumulate_steps = min(u.seconds["train step"] for u in updates) / vals
    per_step = best["train step"] / steps
    fixed = (best["solve"] + best["report"]) / vals
    print(f"{title} (best of {repeats})")
    print(f"   without probe {base:6.2f} s | with probe {with_probe:6.2f} s | ratio {with_probe / base:.3f}")
    rows_per_step = accumulate_steps * vals / steps
    print(
        f"   per training step: {1e6 * per_step:.0f} us in the hooks = {100 * per_step / step:.1f}% of "
        f"the step ({1e3 * step:.2f} ms: forward, backward, optimiser, without probe); without the "
        f"accumulation of rows {1e6 * (per_step - rows_per_step):.0f} us = "
        f"{100 * (per_step - rows_per_step) / step:.1f}%"
    )
    print(
        f"   per validation: fixed cost {1e3 * fixed:.2f} ms (solve {1e3 * best['solve'] / vals:.2f} ms, of which "
        f"accumulating the training rows still buffered {1e3 * accumulate:.2f} ms; report "
        f"{1e3 * best['report'] / vals:.2f} ms) + val batches {1e3 * best['val batches'] / vals:.2f} ms"
    )
    print(f"   accumulation inside the training steps: {1e3 * accumulate_steps:.2f} ms per epoch (buffered blocks "
          f"of {probe.readout(sites[0], 'digit').buffer_rows} rows)")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--wide-epochs", type=int, default=2)
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {describe()}")
    prof = cProfile.Profile() if args.profile else None
    case("1. quickstart: 2 sites of 128 features, 15 epochs", ["backbone.0", "backbone.1"], [128, 128], 15,
         args.repeats, prof)
    if prof is not None:
        pstats.Stats(prof).sort_stats("cumulative").sort_stats("tottime").print_stats(30)
    case(f"2. wide site: 1 site of 2048 features, {args.wide_epochs} epochs", ["backbone.0"], [2048],
         args.wide_epochs, args.repeats)
