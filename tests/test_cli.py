import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from lit_repr.cli import LitReprCLI, config_name


@pytest.fixture(autouse=True)
def _command_line_of_its_own(monkeypatch):
    """The CLI sees only the arguments a test gives it (not pytest's), as on a real command line."""
    monkeypatch.setattr(sys, "argv", ["lit_repr"])


REPO = Path(__file__).resolve().parents[1]

BASE = """
seed_everything: 3
trainer:
  max_epochs: ${model.init_args.max_epochs_hint}
  limit_train_batches: 3
  limit_val_batches: 2
  enable_progress_bar: false
  enable_model_summary: false
  logger:
    class_path: lightning.pytorch.loggers.TensorBoardLogger
    init_args: {save_dir: %(root)s, name: run}
model:
  class_path: %(model)s
  init_args:
    hidden: [16]
    max_epochs_hint: 2
    num_classes: ${data.init_args.num_classes_hint}
data:
  class_path: %(data)s
  init_args: {batch_size: 16, num_classes_hint: 10}
"""


def _write(tmp_path, model="Classifier", data="DigitsDataModule", extra=""):
    cfg = BASE % {"root": tmp_path / "runs", "model": model, "data": data}
    cfg = cfg.replace("init_args: {batch_size: 16, num_classes_hint: 10}", "init_args: {batch_size: 16}")
    cfg = cfg.replace("num_classes: ${data.init_args.num_classes_hint}", "num_classes: 10")
    path = tmp_path / "config.yaml"
    path.write_text(cfg + extra)
    return path


def test_fit_from_yaml_with_interpolation(tmp_path):
    cfg = _write(tmp_path)
    cli = LitReprCLI(args=["fit", "--config", str(cfg)])
    assert cli.trainer.max_epochs == 2  # interpolated from the model's init_args
    assert cli.trainer.current_epoch == 2
    run = tmp_path / "runs" / "run" / "version_0"
    assert (run / "config.yaml").exists()
    assert list(run.glob("events.out.tfevents.*"))
    assert "val/acc" in cli.trainer.callback_metrics


@pytest.mark.parametrize("sub", ["validate", "test", "predict"])
def test_other_subcommands(tmp_path, sub):
    cfg = _write(tmp_path)
    cli = LitReprCLI(args=[sub, "--config", str(cfg)])
    assert cli.trainer.state.fn == sub


def test_unknown_class_path_is_a_clear_error(tmp_path, capsys):
    cfg = _write(tmp_path, model="Clasifier")
    with pytest.raises(SystemExit) as exc:
        LitReprCLI(args=["fit", "--config", str(cfg)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: model.class_path = 'Clasifier': not a known LightningModule; did you mean 'Classif")


PROBE = """
  callbacks:
    - class_path: LinearProbe
      init_args: {sites: ["backbone.*"], targets: {digit: y}, task: classification, mode: %s}
"""


def _mistake(tmp_path, old, new, extra=""):
    cfg = _write(tmp_path)
    text = cfg.read_text().replace("  logger:", extra + "  logger:", 1)
    assert old in text
    cfg.write_text(text.replace(old, new, 1))
    return ["fit", "--config", str(cfg)]


@pytest.mark.parametrize(
    "mistake,cause",
    [
        (
            ("hidden: [16]", "hidden: 16, 16"),
            "error: model.init_args.hidden (Classifier) = '16, 16': expected a list such as [1, 2]; "
            "did you mean [16, 16]?",
        ),
        (
            ("batch_size: 16", "batch_size: sixty-four"),
            "error: data.init_args.batch_size (DigitsDataModule) = 'sixty-four': expected an integer",
        ),
        (
            ("mode: online", "mode: frozn", PROBE % "online"),
            "error: trainer.callbacks[LinearProbe].init_args.mode = 'frozn': expected one of 'online', 'frozen'; "
            "did you mean 'frozen'?",
        ),
        (
            ("hidden: [16]", "hiden: [16]"),
            "error: model.init_args.hiden: Classifier has no argument 'hiden'; did you mean 'hidden'?",
        ),
        (("max_epochs:", "max_epoch:"), "error: unknown key: trainer.max_epoch (did you mean trainer.max_epochs?)"),
    ],
    ids=["list", "int", "choice", "argument", "trainer_key"],
)
def test_parse_errors_print_the_cause_first(tmp_path, capsys, mistake, cause):
    args = _mistake(tmp_path, *mistake)
    with pytest.raises(SystemExit) as exc:
        LitReprCLI(args=args)
    assert exc.value.code == 2
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert lines[0].startswith(cause), lines[0]
    assert lines[1].startswith("Help: 'python -m lit_repr fit ") and len(lines) == 2
    assert "usage:" not in captured.err + captured.out


@pytest.mark.parametrize(
    "arg,cause",
    [
        ("--model=Clasifier", "did you mean 'Classifier'?"),
        ("--data=DigitsDataModul", "did you mean 'DigitsDataModule'?"),
        ("--model=lit_repr.models.Clasifier", "did you mean 'lit_repr.models.Classifier'?"),
        ("--trainer.max_epochs=ten", "trainer.max_epochs = 'ten': expected an integer (or null)"),
        ("--trainer.maxepochs=3", "unknown option: --trainer.maxepochs (did you mean --trainer.max_epochs?)"),
    ],
)
def test_command_line_mistakes_print_the_cause_first(tmp_path, capsys, arg, cause):
    with pytest.raises(SystemExit):
        LitReprCLI(args=["fit", "--config", str(_write(tmp_path)), arg])
    lines = capsys.readouterr().err.splitlines()
    assert any(cause in line for line in lines[:3]), lines[:3]
    assert len(lines) <= 3


def test_config_name_names_the_run_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = _write(tmp_path)
    text = cfg.read_text()
    start = text.index("  logger:")
    (tmp_path / "my_experiment.yaml").write_text(text[:start] + text[text.index("model:") :])
    LitReprCLI(args=["fit", "--config", "my_experiment.yaml"])
    run = tmp_path / "runs" / "my_experiment" / "version_0"
    assert (run / "config.yaml").exists() and (run / "summary.json").exists()
    LitReprCLI(args=["fit", "--config", "my_experiment.yaml", "--trainer.logger.init_args.name=mine"])
    assert (tmp_path / "runs" / "mine" / "version_0" / "config.yaml").exists()  # the user's setting wins
    assert config_name(["fit", "--config=a/b.yaml", "-c", "c/d.yml"]) == "d"


def test_run_failing_at_setup_leaves_no_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = _mistake(tmp_path, "backbone.*", "backbone.9", PROBE % "online")
    with pytest.raises(ValueError, match="site 'backbone.9' matches no submodule"):
        LitReprCLI(args=args)
    assert not (tmp_path / "runs").exists()
    earlier = tmp_path / "runs" / "run" / "version_0"  # an earlier run's directory is left alone
    earlier.mkdir(parents=True)
    with pytest.raises(ValueError):
        LitReprCLI(args=args)
    assert [p.name for p in (tmp_path / "runs" / "run").iterdir()] == ["version_0"]


def test_quickstart_prints_one_line_per_epoch_and_ends_with_the_summary(quickstart_run):
    proc, run = quickstart_run
    assert len(proc.stdout.encode()) < 20_000
    lines = proc.stdout.rstrip().splitlines()
    assert sum(line.startswith("epoch ") for line in lines) == 15
    start = next(i for i, line in enumerate(lines) if line.startswith("Final readouts (fit"))
    table = lines[start:]
    assert re.match(r"callback +site +target +split +acc +auroc$", table[1])
    assert re.match(r"probe +backbone\.1 +digit +val +0\.9\d\d +", table[3])
    assert table[-1] == "saved: runs/quickstart/version_0/summary.json"
    summary = json.loads((run / "summary.json").read_text())["fit"]
    assert summary["scores"]["probe/backbone.1/digit/val/acc"] > 0.9
    row = next(r for r in summary["rows"] if (r["site"], r["split"]) == ("backbone.1", "val"))
    assert row["scores"]["acc"] == summary["scores"]["probe/backbone.1/digit/val/acc"]
    assert "val/acc" in summary["other"]


def test_plugin_entry_point_resolves_by_short_name(tmp_path):
    site = tmp_path / "site"
    (site / "toy_plugin").mkdir(parents=True)
    (site / "toy_plugin" / "__init__.py").write_text(
        textwrap.dedent("""
        from lit_repr.models import Classifier

        class PluginClassifier(Classifier):
            '''A classifier defined by a plugin.'''

            def __init__(self, marker: str = "plugin", **kwargs):
                super().__init__(**kwargs)
                self.marker = marker
    """)
    )
    dist = site / "toy_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[lit_repr.plugins]\ntoy = toy_plugin\n")
    cfg = tmp_path / "config.yaml"
    cfg.write_text(
        (BASE % {"root": tmp_path / "runs", "model": "PluginClassifier", "data": "DigitsDataModule"})
        .replace("num_classes: ${data.init_args.num_classes_hint}", "num_classes: 10\n    marker: found")
        .replace("init_args: {batch_size: 16, num_classes_hint: 10}", "init_args: {batch_size: 16}")
    )
    env = {**os.environ, "PYTHONPATH": f"{site}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    code = (
        "from lit_repr.cli import LitReprCLI\n"
        f"cli = LitReprCLI(args=['fit', '--config', r'{cfg}'])\n"
        "print('MODEL', type(cli.model).__module__, type(cli.model).__name__, cli.model.marker)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=tmp_path, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "MODEL toy_plugin PluginClassifier found" in out.stdout


def test_module_entry_point_help():
    out = subprocess.run([sys.executable, "-m", "lit_repr", "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0
    assert "fit" in out.stdout and "validate" in out.stdout


def test_help_names_the_federate_command(capsys):
    from lit_repr.cli import main

    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "fit" in out and "federate" in out and "federate --config configs/federated_digits.yaml" in out
