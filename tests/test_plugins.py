import logging
import sys
from importlib.metadata import EntryPoint

import pytest

from lit_repr import plugins
from lit_repr.cli import LitReprCLI


@pytest.fixture(autouse=True)
def _command_line_of_its_own(monkeypatch):
    """The CLI sees only the arguments a test gives it (not pytest's), as on a real command line."""
    monkeypatch.setattr(sys, "argv", ["lit_repr"])


BROKEN = EntryPoint(name="broken", value="lit_repr_broken_plugin_xyz", group=plugins.ENTRY_POINT_GROUP)
CONFIG = """
trainer:
  max_epochs: 1
  limit_train_batches: 2
  limit_val_batches: 1
  enable_progress_bar: false
  enable_model_summary: false
  logger: false
model:
  class_path: %s
  init_args: {num_classes: 10, hidden: [8]}
data:
  class_path: DigitsDataModule
  init_args: {batch_size: 16}
"""


@pytest.fixture
def broken_plugin(monkeypatch):
    """One registered plugin whose module cannot be imported."""
    monkeypatch.setattr(plugins, "discover_plugins", lambda: [BROKEN])
    monkeypatch.setattr(plugins, "_loaded", {})
    monkeypatch.setattr(plugins, "_failed", {})


def test_a_broken_plugin_warns_once_and_is_named(broken_plugin, caplog):
    with caplog.at_level(logging.WARNING, logger="lit_repr.plugins"):
        assert plugins.load_plugins() == {}
        plugins.load_plugins()
    assert len(caplog.records) == 1
    msg = caplog.records[0].getMessage()
    assert "lit_repr plugin 'broken' (lit_repr_broken_plugin_xyz) failed to load: ModuleNotFoundError" in msg
    assert plugins.failed_plugins() == {
        "broken": ("lit_repr_broken_plugin_xyz", "ModuleNotFoundError: No module named 'lit_repr_broken_plugin_xyz'")
    }
    with pytest.raises(RuntimeError, match="plugin 'broken'"):
        plugins.load_plugins(strict=True)


def test_a_run_that_does_not_need_the_plugin_goes_on(broken_plugin, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.yaml").write_text(CONFIG % "Classifier")
    cli = LitReprCLI(args=["fit", "--config", "c.yaml"])
    assert cli.trainer.state.finished


@pytest.mark.parametrize("class_path", ["PluginNet", "lit_repr_broken_plugin_xyz.models.PluginNet"])
def test_a_config_that_needs_the_plugin_shows_its_import_error(broken_plugin, tmp_path, capsys, class_path):
    (tmp_path / "c.yaml").write_text(CONFIG % class_path)
    with pytest.raises(SystemExit) as exc:
        LitReprCLI(args=["fit", "--config", str(tmp_path / "c.yaml")])
    assert exc.value.code == 2
    first = next(line for line in capsys.readouterr().err.splitlines() if line.startswith("error:"))
    assert first.startswith(f"error: model.class_path = '{class_path}'")
    assert "plugin 'broken'" in first and "No module named 'lit_repr_broken_plugin_xyz'" in first
