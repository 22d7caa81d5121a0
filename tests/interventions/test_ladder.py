"""The evidence ladder: rungs, claim gaps, the markdown report and the rung columns of summary.json."""

import io

import pytest
import torch

from lit_repr.callbacks import IdentifiabilityMetrics, LinearProbe, RepresentationSimilarity, RunSummary
from lit_repr.interventions import (
    Claim,
    Evidence,
    InterventionReport,
    Rung,
    Steering,
    ZeroAblation,
    claim_gap,
    evidence_from_scores,
    format_report,
    report,
)

PROBE = Evidence("linear probe", 1, "acc", 0.93, site="backbone.0")
ABLATION = Evidence("zero ablation", 2, "accuracy_change", -0.6, -0.65, -0.55, site="backbone.0", confidence=0.95)


def test_claim_gap():
    assert claim_gap(2, [PROBE]) == 1
    assert claim_gap(2, [PROBE, ABLATION]) == 0
    assert claim_gap(1, [ABLATION]) == 0  # floored at 0
    assert claim_gap(3, [PROBE, ABLATION]) == 1
    assert claim_gap(3, []) == 3
    assert claim_gap(Rung.INTERVENTION, [1, ZeroAblation()]) == 0  # rungs and objects with a rung attribute
    assert claim_gap(2, PROBE) == 1


def test_every_readout_and_edit_carries_its_rung_and_method():
    assert (LinearProbe.rung, LinearProbe.method) == (1, "linear probe")
    assert IdentifiabilityMetrics.rung == RepresentationSimilarity.rung == 1
    assert InterventionReport.rung == ZeroAblation.rung == Steering.rung == 2
    assert ZeroAblation.method == "zero ablation"


def test_bad_rungs():
    with pytest.raises(ValueError, match="claim_rung must be a rung"):
        claim_gap(4, [PROBE])
    with pytest.raises(ValueError, match="rung must be a rung"):
        Evidence("probe", 0, "acc", 1.0)
    with pytest.raises(ValueError, match="evidence must be"):
        claim_gap(2, ["a probe"])


def test_report_writes_markdown_to_the_console_and_tensorboard(tmp_path):
    from lightning.pytorch.loggers import TensorBoardLogger

    claims = [
        Claim("backbone.0 encodes the digit", 1, [PROBE]),
        Claim("the classifier uses backbone.0", 2, [PROBE, ABLATION]),
        Claim("backbone.0 caused this input's label", 3, [ABLATION]),
        Claim("an unsupported claim", 2),
    ]
    stream = io.StringIO()
    logger = TensorBoardLogger(str(tmp_path), name="ladder")
    text = report(claims, stream=stream, logger=logger)
    logger.experiment.flush()
    assert stream.getvalue().strip() == text.strip()
    lines = text.splitlines()
    assert lines[2] == "| claim | claim rung | method | rung | site | quantity | effect ± 95% CI | gap |"
    assert "| the classifier uses backbone.0 | 2 | zero ablation | 2 | backbone.0 | accuracy_change | " \
           "-0.600 [-0.650, -0.550] | 0 |" in lines
    assert "| backbone.0 caused this input's label | 3 | zero ablation | 2 | backbone.0 | accuracy_change | " \
           "-0.600 [-0.650, -0.550] | **1** |" in lines
    assert "| an unsupported claim | 2 | (none) | - | - | - | - | **2** |" in lines
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(logger.log_dir)
    acc.Reload()
    tags = acc.Tags()["tensors"]
    assert any(t.startswith("evidence_ladder") for t in tags)


def test_report_rejects_bad_input():
    with pytest.raises(ValueError, match="Claim objects"):
        format_report(["a claim"])
    with pytest.raises(ValueError, match="logger must be"):
        report([Claim("x", 1)], stream=False, logger=object())


def test_evidence_from_scores_and_summary_rows_carry_rung_and_method():
    import lightning.pytorch as pl

    probe = LinearProbe("backbone.0")
    interventions = InterventionReport({"zero": {"backbone.0": ZeroAblation()}})
    probe.scores = {"probe/backbone.0/y/val/acc": 0.9}
    interventions.scores = {"interventions/zero/y/val/accuracy_change": -0.5,
                            "interventions/zero/y/val/accuracy_change_ci_low": -0.6,
                            "interventions/zero/y/val/accuracy_change_ci_high": -0.4}
    ev = evidence_from_scores({**probe.scores, **interventions.scores}, [probe, interventions])
    assert [(e.method, e.rung, e.quantity) for e in ev] == [("linear probe", 1, "acc"),
                                                            ("intervention", 2, "accuracy_change")]
    assert (ev[1].ci_low, ev[1].ci_high, ev[1].confidence) == (-0.6, -0.4, 0.95)
    summary = RunSummary(filename=None, print_table=False)
    trainer = pl.Trainer(callbacks=[probe, interventions, summary], logger=False)
    rows = summary.summarise(trainer, "fit")["rows"]
    assert [(r["callback"], r["rung"], r["method"]) for r in rows] == [("probe", 1, "linear probe"),
                                                                       ("interventions", 2, "intervention")]
    assert torch.tensor(rows[1]["scores"]["accuracy_change"]) == -0.5
