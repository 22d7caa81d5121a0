"""Command-line errors, cause first: one line naming the key, the value and what is allowed.

jsonargparse reports a bad value as a tree (every subtype of a union, every alternative way to give a
class) after the whole usage text. :func:`explain_parse_error` walks that tree, finds the innermost
failure and states it in one line, with "did you mean" for class names, option names and choices.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["explain_parse_error", "explain_config_error", "class_name_hint"]

_KEY = re.compile(r'^Parser key "([^"]+)":\s*(.*)$')
_CLASS = re.compile(r"^Problem with given class_path '([^']+)':\s*(.*)$")
_GOT = re.compile(r"^Expected an? (.+?)\. Got value: (.*)$")
_EXPECTED = re.compile(r"^Expected an? (.+)$")
_NOT_ACCEPTED = re.compile(r"^(?:Option|Key) '([^']+)' is not (?:accepted|expected)")
_DOT_PATH = re.compile(r"^Expected a dot import path string: (.+)$")
_NO_ATTR = re.compile(r"^module '([^']+)' has no attribute '([^']+)'")
_NO_MODULE = re.compile(r"^No module named '([^']+)'")
_GIVEN = re.compile(r"^Given value: (.*)$")
_SUBTYPES = re.compile(r"^Subtypes: \[(.*)\]$")
_UNRECOGNIZED = re.compile(r"^unrecognized arguments: (.+)$")
_NOT_ACCEPT_OPTION = re.compile(r"^Subcommand '([^']+)' does not accept option '([^']+)'")
_REQUIRED = re.compile(r"^the following arguments are required: (.+)$")
_NO_FILE = re.compile(r"File does not exist: '?([^']+)'?")
_NOISE = (
    "Does not validate against any of the Union subtypes",
    "Errors:",
    "Given value type:",
    "Not a valid subclass of",
    "Subclass types expect one of",
    "a class path (str)",
    "a dict with",
    "a dict without",
    "Expected a path but",
    "Expected a <class 'NoneType'>",
)


@dataclass
class _Frame:
    indent: int
    kind: str  # "key" or "class"
    name: str
    given: str | None = None
    subtypes: str | None = None


@dataclass
class _Leaf:
    text: str
    frames: list[_Frame] = field(default_factory=list)


def _short(class_path: str) -> str:
    return class_path.rsplit(".", 1)[-1]


def _import(class_path: str) -> Any:
    module, _, name = class_path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name) if module else None
    except Exception:  # noqa: BLE001 - a hint, never a second error
        return None


def _did_you_mean(word: str, choices: Iterable[str], n: int = 1) -> list[str]:
    choices = list(dict.fromkeys(choices))
    close = difflib.get_close_matches(word, choices, n=n, cutoff=0.6)
    if not close:  # case slips ("classifier") and prefixes ("Classif")
        low = word.lower()
        close = [c for c in choices if c.lower() == low or (len(low) >= 4 and c.lower().startswith(low))][:n]
    return close


def _walk(message: str) -> list[_Leaf]:
    stack: list[_Frame] = []
    leaves: list[_Leaf] = []
    for line in message.splitlines():
        if not line.strip():
            continue
        body = line.lstrip(" ")
        indent = len(line) - len(body)
        if body.startswith("- "):
            body = body[2:]
            indent += 2
        body = body.strip()
        while stack and stack[-1].indent >= indent:
            stack.pop()
        opened = [(kind, m) for kind, m in (("key", _KEY.match(body)), ("class", _CLASS.match(body))) if m]
        if opened:  # a key or a class_path: what follows, indented, is about it
            kind, m = opened[0]
            stack.append(_Frame(indent, kind, m.group(1)))
            if m.group(2):
                leaves.append(_Leaf(m.group(2), list(stack)))
            continue
        keys = [f for f in stack if f.kind == "key"]
        if _GIVEN.match(body) and keys:
            keys[-1].given = _GIVEN.match(body).group(1)  # type: ignore[union-attr]
            continue
        if _SUBTYPES.match(body) and keys:
            keys[-1].subtypes = _SUBTYPES.match(body).group(1)  # type: ignore[union-attr]
            continue
        leaves.append(_Leaf(body, list(stack)))
    return leaves


def _rank(leaf: _Leaf) -> tuple[int, int]:
    text = leaf.text
    if any(text.startswith(n) for n in _NOISE):
        return (0, 0)
    for score, pattern in (
        (6, _GOT),
        (6, _NOT_ACCEPTED),
        (5, _NO_ATTR),
        (5, _NO_MODULE),
        (4, _DOT_PATH),
        (3, _EXPECTED),
    ):
        if pattern.match(text):
            return (score, len(leaf.frames))
    return (1, len(leaf.frames))


def _path(frames: list[_Frame]) -> tuple[str, str | None]:
    """Dotted config path of the frames (``model.init_args.hidden``) and the innermost class's short name."""
    path, cls, after_class = "", None, False
    for f in frames:
        if f.kind == "class":
            cls = _short(f.name)
            after_class = True
            if _is_list(frames, f):  # e.g. trainer.callbacks[LinearProbe]
                path += f"[{cls}]"
            continue
        path = f.name if not path else path + (".init_args." if after_class else ".") + f.name
        after_class = False
    return path, cls


def _is_list(frames: list[_Frame], class_frame: _Frame) -> bool:
    i = frames.index(class_frame)
    owner = next((f for f in reversed(frames[:i]) if f.kind == "key"), None)
    return bool(owner and owner.given and owner.given.startswith("["))


_TYPE_WORDS = {
    "int": "an integer",
    "float": "a number",
    "bool": "true or false",
    "str": "a string",
    "NoneType": "null",
    "dict": "a mapping such as {key: value}",
    "Mapping": "a mapping such as {key: value}",
    "Sequence": "a list such as [1, 2]",
    "list": "a list such as [1, 2]",
    "tuple": "a list such as [1, 2]",
}


def _describe(type_text: str) -> tuple[str, list[str]]:
    """Words for a jsonargparse type string, and its choices if it is a ``Literal``."""
    t = type_text.strip()
    lit = re.search(r"Literal\[(.*)\]", t)
    if lit:
        choices = re.findall(r"'([^']*)'|\"([^\"]*)\"", lit.group(1))
        values = [a or b for a, b in choices]
        return "one of " + ", ".join(repr(v) for v in values), values
    names = re.findall(r"<class '([\w.]+)'>", t) or re.findall(r"([\w.]+)\[", t) or [t]
    words = []
    for name in names:
        short = _short(name)
        words.append(_TYPE_WORDS.get(short, f"a {short}"))
    words = list(dict.fromkeys(words))
    if len(words) > 1 and "null" in words:
        words.remove("null")
        return " or ".join(words) + " (or null)", []
    return " or ".join(words), []


def _subclasses(base: type) -> list[type]:
    out, stack = [], [base]
    while stack:
        for sub in stack.pop().__subclasses__():
            if sub not in out:
                out.append(sub)
                stack.append(sub)
    return out


def _base_class(frames: list[_Frame]) -> type | None:
    for f in frames:
        if f.kind == "key" and f.subtypes:
            for name in re.findall(r"([A-Za-z_][\w]*(?:\.[A-Za-z_]\w*)+)", f.subtypes):
                obj = _import(name)
                if inspect.isclass(obj) and obj is not type(None):
                    return obj
    return None


def _is_listed(cls: type) -> bool:
    """Whether a class is lit_repr's or an installed plugin's (the short names worth listing).

    A class that sets ``cli_listed = False`` (e.g. the federated generative priors, fitted per client by
    their own ``fit_data``, not by ``fit``) is left out, so the list does not depend on what was imported.
    """
    from lit_repr.plugins import load_plugins

    if not getattr(cls, "cli_listed", True):
        return False

    names = ["lit_repr"]
    for obj in load_plugins().values():  # a module, or the callable an entry point named
        names.append(obj.__name__ if inspect.ismodule(obj) else getattr(obj, "__module__", "") or "")
    return cls.__module__.split(".", 1)[0] in {n.split(".", 1)[0] for n in names if n}


def _plugin_note(class_path: str) -> str:
    from lit_repr.plugins import failed_plugins

    failed = failed_plugins()
    if not failed:
        return ""
    top = class_path.split(".", 1)[0]
    for name, (value, error) in failed.items():
        if value.split(":", 1)[0].split(".", 1)[0] == top:
            return f"; it belongs to plugin {name!r}, which failed to load: {error}."
    listed = "; ".join(f"plugin {name!r} ({value}) failed to load: {error}" for name, (value, error) in failed.items())
    return f" A plugin may provide it, but {listed}."


def class_name_hint(key: str, value: str, base: type | None) -> str:
    """One line for a class name that does not resolve, with the closest known names.

    Args:
        key: the config key (``model``, ``data``, ``trainer.callbacks``).
        value: the name given.
        base: the class it must subclass (``None`` if unknown).

    Example:
        >>> from lightning.pytorch import LightningModule
        >>> import lit_repr.models
        >>> class_name_hint("model", "Clasifier", LightningModule).split("?")[0]
        "model.class_path = 'Clasifier': not a known LightningModule; did you mean 'Classifier'"
    """
    base_name = base.__name__ if base is not None else "class"
    if "." in value:
        module, _, name = value.rpartition(".")
        try:
            mod = importlib.import_module(module)
        except ImportError as err:
            return f"{key}.class_path = {value!r}: cannot import module {module!r} ({err}){_plugin_note(value)}"
        names = [n for n, o in vars(mod).items() if inspect.isclass(o) and (base is None or issubclass(o, base))]
        close = _did_you_mean(name, names)
        hint = f"; did you mean {module + '.' + close[0]!r}?" if close else ""
        return f"{key}.class_path = {value!r}: module {module!r} has no {base_name} named {name!r}{hint}"
    known = _subclasses(base) if base is not None else []
    names = [c.__name__ for c in known]
    close = _did_you_mean(value, names)
    own = sorted({c.__name__ for c in known if _is_listed(c) and not c.__name__.startswith("_")})
    listed = ", ".join(own[:12]) + (", ..." if len(own) > 12 else "")
    return (
        f"{key}.class_path = {value!r}: not a known {base_name}"
        + (f"; did you mean {close[0]!r}?" if close else ".")
        + _plugin_note(value)
        + (f" Known: {listed}; any other" if listed else " Any")
        + " class by its import path (package.module.ClassName)."
    )


def _init_params(class_path: str) -> list[str]:
    cls = _import(class_path)
    if cls is None:
        return []
    try:
        params = inspect.signature(cls.__init__).parameters
    except (TypeError, ValueError):
        return []
    return [p for p, v in params.items() if p != "self" and v.kind not in (v.VAR_POSITIONAL, v.VAR_KEYWORD)]


def _option_names(parser: Any, subcommand: str | None) -> list[str]:
    parsers = [parser]
    action = getattr(parser, "_subcommands_action", None)
    if action is not None and subcommand in getattr(action, "_name_parser_map", {}):
        parsers.append(action._name_parser_map[subcommand])
    dests = []
    for p in parsers:
        for a in getattr(p, "_actions", []):
            if a.dest and a.dest not in ("help", "config", "print_config"):
                dests.append(a.dest)
    return dests


def _explain_leaf(leaf: _Leaf) -> tuple[str, str | None]:
    """(the cause line, the class whose ``--<key>.help`` documents it)."""
    text = leaf.text
    path, cls = _path(leaf.frames)
    cls_note = f" ({cls})" if cls and f"[{cls}]" not in path else ""
    classes = [f.name for f in leaf.frames if f.kind == "class"]
    keys = [f for f in leaf.frames if f.kind == "key"]
    got, expected = _GOT.match(text), _EXPECTED.match(text)
    if got or (expected and not _DOT_PATH.match(text)):
        if got:
            type_text, value = got.group(1), got.group(2)
        else:  # a union: the value and the subtypes sit on the key
            type_text = keys[-1].subtypes if keys and keys[-1].subtypes else expected.group(1)  # type: ignore[union-attr]
            value = keys[-1].given if keys else None
        allowed, choices = _describe(type_text)
        hint = ""
        if value is not None and choices:
            close = _did_you_mean(value, choices)
            hint = f"; did you mean {close[0]!r}?" if close else ""
        elif value is not None and "list" in allowed and "," in value and not value.lstrip().startswith("["):
            hint = f"; did you mean [{value.strip()}]?"
        shown = f" = {value!r}" if value is not None else ""
        return f"{path}{cls_note}{shown}: expected {allowed}{hint}", classes[-1] if classes else None
    m = _NOT_ACCEPTED.match(text)
    if m:
        bad = m.group(1)
        params = _init_params(classes[-1]) if classes else []
        close = _did_you_mean(bad, params)
        owner = _short(classes[-1]) if classes else path
        where = f"{path}.init_args.{bad}" if classes else f"{path}.{bad}"
        hint = f"; did you mean {close[0]!r}?" if close else ""
        takes = f" {owner} takes: {', '.join(params)}." if params else ""
        return f"{where}: {owner} has no argument {bad!r}{hint}{takes}", classes[-1] if classes else None
    m = _DOT_PATH.match(text)
    if m:
        return class_name_hint(path.split("[")[0], m.group(1).strip(), _base_class(leaf.frames)), None
    m = _NO_ATTR.match(text)
    if m and classes:
        return class_name_hint(path.split("[")[0], classes[-1], _base_class(leaf.frames)), None
    m = _NO_MODULE.match(text)
    if m:
        bad = classes[-1] if classes else m.group(1)
        return f"{path}.class_path = {bad!r}: cannot be imported ({text}){_plugin_note(bad)}", None
    return (f"{path}: {text}" if path else text), None


def explain_parse_error(
    message: str, parser: Any = None, subcommand: str | None = None, prog: str = "python -m lit_repr"
) -> list[str]:
    """The lines to print for a jsonargparse error: the cause first, then where help is.

    Args:
        message: the ``ArgumentError`` text.
        parser: the CLI's parser (for option-name suggestions).
        subcommand: ``fit``, ``validate``, ... if known.
        prog: how the user runs the command line.

    Example:
        >>> msg = '''Parser key "data":
        ...   Errors:
        ...     - Problem with given class_path 'lit_repr.data.DigitsDataModule':
        ...         Parser key "batch_size":
        ...           Expected a <class 'int'>. Got value: sixty-four'''
        >>> explain_parse_error(msg, subcommand="fit")[0]
        "error: data.init_args.batch_size (DigitsDataModule) = 'sixty-four': expected an integer"
    """
    run = f"{prog} {subcommand}" if subcommand else prog
    first = message.strip().splitlines()[0].strip() if message.strip() else "invalid arguments"
    help_for: str | None = None
    help_key = ""
    m = _NOT_ACCEPT_OPTION.match(first) or _UNRECOGNIZED.match(first)
    if m:
        as_key = m.re is _NOT_ACCEPT_OPTION  # from a config file or the command line
        bad = [m.group(2)] if as_key else re.findall(r"--?([\w.\-]+)", m.group(1))
        options = _option_names(parser, subcommand) if parser is not None else []
        dash = "" if as_key else "--"
        hints = []
        for b in bad:
            close = _did_you_mean(b, options)
            hints.append(f"{dash}{b}" + (f" (did you mean {dash}{close[0]}?)" if close else ""))
        what = "key" if as_key else "option"
        cause = f"unknown {what}{'s' if len(bad) > 1 else ''}: {', '.join(hints)}"
    elif _REQUIRED.match(first):
        missing = _REQUIRED.match(first).group(1)  # type: ignore[union-attr]
        cause = (
            f"missing {missing}: give a config (--config configs/quickstart.yaml) or the classes "
            f"(--model=Classifier --data=DigitsDataModule)"
        )
    else:
        leaves = [leaf for leaf in _walk(message) if _rank(leaf)[0] > 0]
        no_file = _NO_FILE.search(message)
        if no_file and '"config"' in first:
            cause = _missing_file_hint(no_file.group(1).strip())
        elif leaves:
            best = max(leaves, key=_rank)
            cause, help_for = _explain_leaf(best)
            keys = [f.name for f in best.frames if f.kind == "key"]
            help_key = keys[0] if keys else ""
        else:
            cause = " ".join(line.strip() for line in message.strip().splitlines()[:2])
    pointer = f"Help: '{run} --help' (every option)"
    if help_for and help_key:
        name = _short(help_for)
        pointer = f"Help: '{run} --{help_key}.help {name}' (the arguments of {name}), '{run} --help' (every option)"
    return [f"error: {cause}", pointer + "."]


def _missing_file_hint(path: str) -> str:
    folder, name = os.path.split(path)
    try:
        files = [f for f in os.listdir(folder or ".") if f.endswith((".yaml", ".yml", ".json"))]
    except OSError:
        files = []
    close = _did_you_mean(name, files)
    hint = f"; did you mean {os.path.join(os.path.relpath(folder or '.'), close[0])!r}?" if close else ""
    return f"--config = {path!r}: file does not exist{hint}"


def explain_config_error(err: BaseException) -> str:
    """One line for an OmegaConf error raised while reading a config (e.g. a missing interpolation key).

    Args:
        err: the exception.

    Example:
        >>> from omegaconf import OmegaConf
        >>> try:
        ...     OmegaConf.create({"a": "${b}"}).a
        ... except Exception as e:
        ...     print(explain_config_error(e))
        error: a: Interpolation key 'b' not found (every ${...} must name a key of the config)
    """
    text = str(getattr(err, "msg", None) or err).strip().splitlines()[0]
    key = getattr(err, "full_key", None)
    extra = " (every ${...} must name a key of the config)" if "Interpolation" in type(err).__name__ else ""
    return f"error: {key + ': ' if key else ''}{text}{extra}"

