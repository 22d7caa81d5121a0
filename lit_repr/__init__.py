"""lit_repr: read what any Lightning model represents."""

__version__ = "0.1.0"
