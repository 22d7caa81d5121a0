"""Callbacks that read representations during any Lightning run."""

__all__: list[str] = []
