"""Export a pruned model to a serving format and load it back.

Formats (one file each, registered with ``register_format``): ``hf`` (plain folder with zeros),
``compressed-tensors`` (the package's sparse-bitmask / sparse-24-bitmask layouts) and ``cs256``
(compressed sparse tiles, docs/cs256.md).
"""
from .api import export_model, load_any, load_exported, read_info
from .errors import ExportFormatError, MaskFitError
from .registry import ExportFormat, available_formats, get_format, register_format

__all__ = ["ExportFormat", "ExportFormatError", "MaskFitError", "available_formats", "export_model", "get_format",
           "load_any", "load_exported", "read_info", "register_format"]
