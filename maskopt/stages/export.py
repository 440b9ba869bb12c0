"""The export stage: the model as it is now, with the run's explicit masks, in a serving format (cs256,
compressed-tensors, hf) written atomically to its own folder."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from . import Stage, register_stage


@dataclass
class ExportOptions:
    format: str = "cs256"  # a registered export format: hf | compressed-tensors | cs256
    out: str = ""  # the export folder (written atomically; checked like every output)
    overwrite: bool = False  # replace an earlier maskopt export there
    options: dict[str, Any] = field(default_factory=dict)  # the format's options, e.g. {"quant": "int4"}

    def __post_init__(self) -> None:
        from ..export import get_format  # noqa: PLC0415
        from ..export.api import coerce_options  # noqa: PLC0415

        get_format(self.format)
        if not self.out:
            raise ValueError("the export stage needs out=FOLDER")
        self.options = coerce_options(self.format, {k: str(v) for k, v in self.options.items()})


@register_stage("export")
class ExportStage(Stage):
    """Write the model (and its masks, the kept sets) in a serving format; the run's own output is untouched."""

    name = "export"
    Options = ExportOptions
    main_rank_only = True

    def run(self, ctx) -> None:
        from ..export import export_model  # noqa: PLC0415

        o: ExportOptions = self.options
        info = export_model(ctx.model, ctx.tokenizer, o.out, o.format, overwrite=o.overwrite, masks=ctx.masks or None,
                            inputs=ctx.input_paths, **o.options)
        ctx.report.exports[o.out] = {k: v for k, v in info.items() if k != "sha256"}
        ctx.log(f"exported as {info['format']} to {o.out}")
