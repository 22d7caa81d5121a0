"""The one-line causes of jsonargparse's error trees (integration through the CLI: tests/test_cli.py)."""

import pytest
from omegaconf import OmegaConf

import lit_repr.callbacks  # noqa: F401 - short class names to suggest
import lit_repr.models  # noqa: F401
from lit_repr.cli_errors import explain_config_error, explain_parse_error

CALLBACK_CHOICE = """Parser key "trainer.callbacks":
  Does not validate against any of the Union subtypes
  Subtypes: [list[lightning.pytorch.callbacks.callback.Callback], <class 'NoneType'>]
  Errors:
    - Problem with given class_path 'lit_repr.callbacks.LinearProbe':
        Parser key "mode":
          Expected a typing.Literal['online', 'frozen']. Got value: frozn
    - Not a valid subclass of Callback
      Subclass types expect one of:
      - a class path (str)
    - Expected a <class 'NoneType'>
  Given value type: <class 'list'>
  Given value: [{'class_path': 'LinearProbe', 'init_args': {'mode': 'frozn'}}]"""

UNION = """Parser key "trainer.max_epochs":
  Does not validate against any of the Union subtypes
  Subtypes: [<class 'int'>, <class 'NoneType'>]
  Errors:
    - Expected a <class 'int'>
    - Expected a <class 'NoneType'>
  Given value type: <class 'str'>
  Given value: ten"""

CLASS_FROM_COMMAND_LINE = """Parser key "model":

  - Expected a path but Clasifier either not accessible or invalid
  - Does not validate against any of the Union subtypes
  Subtypes: [<class 'lightning.pytorch.core.module.LightningModule'>, <class 'NoneType'>]
  Errors:
    - Expected a dot import path string: Clasifier
    - Expected a <class 'NoneType'>
  Given value type: <class 'str'>
  Given value: Clasifier"""


def test_innermost_cause_with_choices():
    lines = explain_parse_error(CALLBACK_CHOICE, subcommand="fit")
    assert lines[0] == (
        "error: trainer.callbacks[LinearProbe].init_args.mode = 'frozn': expected one of 'online', 'frozen'; "
        "did you mean 'frozen'?"
    )
    assert "--trainer.callbacks.help LinearProbe" in lines[1]


def test_union_value_sits_on_the_key():
    assert explain_parse_error(UNION)[0] == "error: trainer.max_epochs = 'ten': expected an integer (or null)"


def test_class_name_from_the_command_line_gets_suggestions():
    first = explain_parse_error(CLASS_FROM_COMMAND_LINE, subcommand="fit")[0]
    assert first.startswith("error: model.class_path = 'Clasifier': not a known LightningModule; did you mean")


def test_unparsed_messages_still_come_first_and_short():
    lines = explain_parse_error("Something new went wrong\n  with details", prog="lit-repr")
    assert lines == ["error: Something new went wrong", "Help: 'lit-repr --help' (every option)."]


def test_config_interpolation_error():
    with pytest.raises(Exception) as info:
        OmegaConf.to_container(OmegaConf.create({"model": {"epochs": "${trainer.max_epochs}"}}), resolve=True)
    assert explain_config_error(info.value).startswith(
        "error: model.epochs: Interpolation key 'trainer.max_epochs' not found"
    )
