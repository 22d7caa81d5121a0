import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from lit_repr.cli import LitReprCLI

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
    with pytest.raises(SystemExit):
        LitReprCLI(args=["fit", "--config", str(cfg)])
    err = capsys.readouterr().err
    assert "'Clasifier' is not a known LightningModule; did you mean ['Classifier']" in err


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
