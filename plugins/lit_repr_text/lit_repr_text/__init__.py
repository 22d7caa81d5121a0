"""lit_repr plugin for text: all-MiniLM-L6-v2 with named sites per layer, loaded offline, and the
docstrings of Python's standard library as a corpus with properties to probe for.

Installed, it registers through the ``lit_repr.plugins`` entry point, so configs name its classes by
short name (``class_path: TextEncoder``, ``class_path: TextDataModule``).
"""

from lit_repr_text.data import KINDS, Docstring, TextDataModule, has_code, stdlib_docstrings, trim_padding
from lit_repr_text.encoder import HiddenState, MaskedMeanPool, TextEncoder, load_minilm, load_tokenizer, minilm_path

__all__ = [
    "TextEncoder",
    "TextDataModule",
    "HiddenState",
    "MaskedMeanPool",
    "Docstring",
    "KINDS",
    "stdlib_docstrings",
    "has_code",
    "trim_padding",
    "minilm_path",
    "load_minilm",
    "load_tokenizer",
]
