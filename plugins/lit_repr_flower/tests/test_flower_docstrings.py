"""Every public class of the plugin documents its arguments and shows a runnable example; every example runs."""

import dataclasses
import doctest
import importlib
import inspect
import pkgutil

import lit_repr_flower
import pytest

MODULES = sorted(m.name for m in pkgutil.walk_packages(lit_repr_flower.__path__, prefix="lit_repr_flower."))


def test_modules_found():
    assert MODULES == [f"lit_repr_flower.{m}" for m in
                       ("client_app", "faults", "federation", "messages", "server_app", "simulation")]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.attempted > 0 and result.failed == 0, f"{result.failed} docstring example(s) of {name} failed"


@pytest.mark.parametrize("name", MODULES)
def test_public_classes_have_args_and_example(name):
    module = importlib.import_module(name)
    for cls_name in module.__all__:
        cls = getattr(module, cls_name)
        if not inspect.isclass(cls) or cls.__module__ != name:
            continue
        doc = inspect.getdoc(cls) or ""
        if dataclasses.is_dataclass(cls) and "Attributes:" in doc:  # a result container
            continue
        params = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "args", "kwargs")]
        assert not params or "Args:" in doc, cls_name
        assert "Example" in doc, cls_name
