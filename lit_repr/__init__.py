"""lit_repr: read what any Lightning model represents."""

from lit_repr.features import features

__version__ = "0.1.0"
__all__ = ["features", "__version__"]
