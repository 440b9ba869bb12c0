"""Errors of the export formats: bad files and masks that a format cannot hold."""
from __future__ import annotations


class ExportFormatError(ValueError):
    """An exported folder is truncated, corrupted, inconsistent with its model, or of an unknown format."""


class MaskFitError(ValueError):
    """A mask (the zeros of a weight) does not fit the layout of the requested format."""
