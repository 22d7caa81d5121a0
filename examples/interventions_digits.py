"""From a probe to an intervention on the digits classifier, and a report that says which claims that supports.

1. Rung 1 (association): a classifier is trained on scikit-learn's digits while a frozen
   ``LinearProbe`` reads the digit from its hidden site ``backbone.1``. High probe accuracy says the
   site *encodes* the digit; it does not say the classifier *uses* it.
2. Rung 2 (intervention): ``InterventionReport`` ablates the site (zeros, and the mean over training
   inputs) and steers it along the probe's direction for the digit 3, and measures what changes
   over the validation inputs, with bootstrap intervals: the change in accuracy and loss, and the
   change in the probability of a 3.
3. The ladder report: each claim with its evidence, the rung each stands on and the gap between
   the claim and its best evidence (printed, and written to TensorBoard's text tab).

Run:  python examples/interventions_digits.py  [--epochs 8]
"""

from __future__ import annotations

import argparse

import lightning.pytorch as pl
from lightning.pytorch.loggers import TensorBoardLogger

from lit_repr.callbacks import LinearProbe, RunSummary
from lit_repr.data import DigitsDataModule
from lit_repr.interventions import (
    Claim,
    InterventionReport,
    MeanAblation,
    Steering,
    ZeroAblation,
    evidence_from_scores,
    report,
)
from lit_repr.models import Classifier

SITE = "backbone.1"  # the second hidden layer (Linear + ReLU)
DIGIT = 3


def trainer_for(callbacks: list, epochs: int, logger: object) -> pl.Trainer:
    return pl.Trainer(max_epochs=epochs, accelerator="cpu", devices=1, callbacks=callbacks, logger=logger,
                      enable_checkpointing=False, enable_model_summary=False, enable_progress_bar=False)


def main(epochs: int = 8, steer_scale: float = 8.0, logger: bool = True) -> dict:
    pl.seed_everything(0, verbose=False)
    dm = DigitsDataModule(batch_size=64)
    dm.setup("fit")
    model = Classifier(in_features=64, hidden=[64, 32], lr=3e-3)
    tb = TensorBoardLogger("runs", name="interventions_digits") if logger else False

    # rung 1: what the hidden site encodes
    probe = LinearProbe(SITE, targets={"digit": "y"}, mode="frozen")
    trainer = trainer_for([probe, RunSummary()], epochs, tb)
    trainer.fit(model, dm)

    # rung 2: what happens to the classifier when the site is edited
    readout = probe.readout(SITE, "digit")
    reference = dm.datasets["train"].tensors["x"][:512]
    ablations = InterventionReport(
        {"zero": {SITE: ZeroAblation()}, "mean": {SITE: MeanAblation(reference)}},
        quantities=["accuracy", "loss"], eval_splits=["val"], name="ablation",
    )
    steering = InterventionReport(
        {f"steer_to_{DIGIT}": {SITE: Steering.from_probe(readout, output=DIGIT, scale=steer_scale)}},
        quantities=["probability", "accuracy"], target_class=DIGIT, eval_splits=["val"], name="steering",
    )
    checker = trainer_for([ablations, steering, RunSummary()], epochs, tb)
    checker.validate(model, dm, verbose=False)

    # the ladder: claims against their evidence
    scores = {**probe.scores, **ablations.scores, **steering.scores}
    probe_ev = evidence_from_scores({k: v for k, v in probe.scores.items() if "/val/" in k}, [probe],
                                    quantities=["acc"])
    acc_drop = [e for e in ablations.evidence if e.quantity == "accuracy_change"]
    toward = [e for e in steering.evidence if e.quantity == "probability_change"]
    claims = [
        Claim(f"{SITE} encodes the digit", 1, probe_ev),
        Claim(f"the classifier uses {SITE} to decide the digit (probe alone)", 2, probe_ev),
        Claim(f"the classifier uses {SITE} to decide the digit (probe and ablations)", 2, probe_ev + acc_drop),
        Claim(f"moving {SITE} along the probe's {DIGIT} direction makes the classifier say {DIGIT}", 2, toward),
        Claim(f"{SITE} is why this particular image was read as a {DIGIT}", 3, probe_ev + acc_drop + toward),
    ]
    text = report(claims, logger=checker, title="Evidence ladder: digits classifier")
    return {"scores": scores, "claims": claims, "report": text, "probe": probe, "ablations": ablations,
            "steering": steering}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--steer-scale", type=float, default=8.0)
    args = parser.parse_args()
    main(epochs=args.epochs, steer_scale=args.steer_scale)
