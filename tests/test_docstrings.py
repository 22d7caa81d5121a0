"""Every public class documents its arguments and shows a runnable example; every example runs."""

import dataclasses
import doctest
import importlib
import inspect
import pkgutil

import pytest

import lit_repr

MODULES = sorted(
    m.name for m in pkgutil.walk_packages(lit_repr.__path__, prefix="lit_repr.") if not m.name.endswith("__main__")
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.failed == 0, f"{result.failed} docstring example(s) of {name} failed"


def _public_classes():
    for name in MODULES:
        module = importlib.import_module(name)
        for cls_name in getattr(module, "__all__", []):
            obj = getattr(module, cls_name)
            if inspect.isclass(obj) and obj.__module__ == name:
                yield f"{name}.{cls_name}", obj


@pytest.mark.parametrize("qualname,cls", list(_public_classes()), ids=lambda v: v if isinstance(v, str) else "")
def test_public_classes_have_args_and_example(qualname, cls):
    doc = inspect.getdoc(cls) or ""
    if dataclasses.is_dataclass(cls):  # result containers: their fields are documented, not constructed by users
        assert "Attributes:" in doc or "``" in doc, f"{qualname} does not document its fields"
        return
    params = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "args", "kwargs")]
    if params:
        assert "Args:" in doc, f"{qualname} has constructor arguments but no 'Args:' section"
    assert "Example" in doc, f"{qualname} has no 'Example:' section"
