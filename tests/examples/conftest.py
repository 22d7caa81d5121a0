"""Examples are scripts: the tests import them by path, with examples/ on sys.path as when they run."""

import importlib.util
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _examples_on_path(monkeypatch):
    """An example imports its sibling's helpers, as it does when run as a script from examples/."""
    monkeypatch.syspath_prepend(str(REPO / "examples"))


@pytest.fixture
def load_example():
    """``load_example(name)``: the module of ``examples/<name>.py``."""

    def load(name):
        path = REPO / "examples" / f"{name}.py"
        spec = importlib.util.spec_from_file_location(f"_example_{name}", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        return module

    return load
