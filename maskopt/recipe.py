"""Recipes: a run written down as one YAML file (in the spirit of llm-compressor's recipes), run again bit for bit.

    maskopt_recipe: 1
    model: ../shared/models/maskopt-tiny-llama          # optional: the command line's MODEL wins
    calibration: {texts: [calib.txt], nsamples: 128, seqlen: 256, seed: 0, batch_size: 8}
    stages:
      - evaluate: {texts: [test.txt], label: dense, max_windows: 32}
      - prune: {method: sparseswaps, sparsity: 0.6, refit: true, method_options: {warm_start: sparsefw},
                ignore: ["re:model.layers.0.mlp.down_proj"]}
      - masklora: {steps: 100}
      - evaluate: {texts: [test.txt], label: pruned, max_windows: 32}
      - export: {format: cs256, out: out/cs256}
      - save: {}
    out: out/pruned                                     # optional: --out wins
    warm_from: other/pruned_model                       # optional: polish this model's zeros (prune with
                                                        # warm_start=existing; `model` is then its dense model)

Every stage is a registered stage name (``maskopt methods`` lists the recovery ones) with the fields of its options;
every name, field, type and value is checked before any model is loaded. The calibration settings are the run's
(they also fill the prune stage's own copies); where the output goes, the device and progress are not part of a
recipe. ``maskopt run RECIPE``, ``maskopt prune --recipe RECIPE``, ``maskopt.oneshot(model, tokenizer, recipe=…)``;
every prune/recover run records its recipe in the report and writes it with ``--save-recipe FILE``.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import PruneConfig
from .stages import STAGES, Stage, make_stage, new_stage

VERSION = 1
CALIBRATION_KEYS = ("texts", "nsamples", "seqlen", "seed", "batch_size")
# PruneConfig fields that a recipe sets once for the whole run (calibration) or leaves to the command line
_RUN_FIELDS = {"nsamples", "seqlen", "seed", "batch_size", "device", "offload", "progress"}
_SAVE_FIELDS = {"overwrite"}  # the command line's --overwrite


class RecipeError(ValueError):
    """A recipe that cannot be run as written."""


@dataclass
class Recipe:
    stages: list[tuple[str, dict[str, Any]]]
    calibration: dict[str, Any] = field(default_factory=dict)
    model: str | None = None
    out: str | None = None
    warm_from: str | None = None  # a model pruned elsewhere: its zeros warm-start a prune stage (warm_start=existing)

    # ---- reading --------------------------------------------------------------------------
    @classmethod
    def load(cls, source: str | Path | dict) -> "Recipe":
        """From a YAML file, YAML text or a dict; structure checked here, stage options in ``build``."""
        import yaml  # noqa: PLC0415

        if isinstance(source, dict):
            data = source
        else:
            p = Path(source)
            text = p.read_text() if p.is_file() else None
            if text is None:
                if "\n" not in str(source) and str(source).endswith((".yaml", ".yml")):
                    raise RecipeError(f"recipe file {source} does not exist")
                text = str(source)
            try:
                data = yaml.safe_load(text)
            except yaml.YAMLError as e:
                raise RecipeError(f"recipe {source}: not valid YAML ({str(e).splitlines()[0]})") from None
        if not isinstance(data, dict):
            raise RecipeError("a recipe is a mapping with 'stages' (and optionally model, calibration, out)")
        unknown = sorted(set(data) - {"maskopt_recipe", "model", "calibration", "stages", "out", "warm_from"})
        if unknown:
            raise RecipeError(f"recipe: unknown key(s) {unknown}; keys: maskopt_recipe, model, calibration, stages, "
                              "out, warm_from")
        if data.get("maskopt_recipe", VERSION) != VERSION:
            raise RecipeError(f"recipe version {data['maskopt_recipe']!r}; this maskopt reads version {VERSION}")
        calib = data.get("calibration") or {}
        if not isinstance(calib, dict) or set(calib) - set(CALIBRATION_KEYS):
            raise RecipeError(f"recipe: calibration takes {', '.join(CALIBRATION_KEYS)}; got {calib!r}")
        stages = []
        for i, item in enumerate(data.get("stages") or []):
            if isinstance(item, str):
                item = {item: {}}
            if not (isinstance(item, dict) and len(item) == 1):
                raise RecipeError(f"recipe stage {i + 1}: write '- NAME: {{options}}', got {item!r}")
            (name, opts), = item.items()
            if opts is not None and not isinstance(opts, dict):
                raise RecipeError(f"recipe stage {i + 1} ({name}): options must be a mapping, got {opts!r}")
            stages.append((str(name), dict(opts or {})))
        if not stages:
            raise RecipeError("recipe: no stages")
        return cls(stages, dict(calib), data.get("model"), data.get("out"), data.get("warm_from"))

    # ---- writing --------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"maskopt_recipe": VERSION}
        if self.model is not None:
            d["model"] = str(self.model)
        d["calibration"] = dict(self.calibration)
        d["stages"] = [{name: opts} for name, opts in self.stages]
        if self.out is not None:
            d["out"] = str(self.out)
        if self.warm_from is not None:
            d["warm_from"] = str(self.warm_from)
        return _plain(d)

    def to_yaml(self) -> str:
        import yaml  # noqa: PLC0415

        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None, width=120)

    @classmethod
    def from_stages(cls, stages: list[Stage], calibration: dict[str, Any], model: str | None = None,
                    out: str | None = None, warm_from: str | None = None) -> "Recipe":
        """The recipe of a stage list built elsewhere (the command line): what ``build`` turns back into it."""
        items = []
        for s in stages:
            opts = dataclasses.asdict(s.options)
            if s.name == "prune":
                opts = {k: v for k, v in opts.items() if k not in _RUN_FIELDS}
            elif s.name == "save":
                opts = {k: v for k, v in opts.items() if k not in _SAVE_FIELDS}
            else:
                _, meta = STAGES.entry(s.name)
                opts = {k: v for k, v in opts.items() if k not in meta["preset"]}
            items.append((s.name, opts))
        return cls(items, {k: v for k, v in calibration.items() if v is not None}, model, out, warm_from)

    # ---- stages ---------------------------------------------------------------------------
    def calibration_settings(self) -> dict[str, Any]:
        c = self.calibration
        return {"nsamples": int(c.get("nsamples", 128)), "seqlen": c.get("seqlen"), "seed": int(c.get("seed", 0)),
                "batch_size": int(c.get("batch_size", 8))}

    def build(self, *, overwrite: bool = False, progress: bool = True, device: str | None = None) -> list[Stage]:
        """The stage list, every option validated (before any model is loaded)."""
        run = self.calibration_settings()
        out = []
        for i, (name, opts) in enumerate(self.stages):
            what = f"recipe stage {i + 1} ({name})"
            try:
                if name == "prune":
                    bad = sorted(set(opts) & _RUN_FIELDS)
                    if bad:
                        raise RecipeError(f"{bad} belong to the recipe's calibration section or the command line")
                    from .options import build_options  # noqa: PLC0415

                    typed = build_options(PruneConfig, opts, "prune")
                    out.append(new_stage("prune", PruneConfig(**typed, **run, device=device, progress=progress)))
                elif name == "save":
                    if set(opts):
                        raise RecipeError("save takes no options (the output is --out, replacing it is --overwrite)")
                    out.append(new_stage("save", overwrite=overwrite))
                else:
                    out.append(make_stage(name, options=opts))
            except (ValueError, TypeError) as e:
                raise RecipeError(f"{what}: {e}") from None
        existing = any(s.name == "prune" and s.options.polishes_existing for s in out)
        if existing and not self.warm_from:
            raise RecipeError("a prune stage starts from existing zeros (warm_start=existing): name the model pruned "
                              "elsewhere as warm_from (and its dense model as model)")
        if self.warm_from and not existing:
            raise RecipeError("warm_from is the model whose zeros a prune stage polishes: use method_options "
                              "{warm_start: existing} in the prune stage")
        return out


def _plain(x: Any) -> Any:
    """Tuples and paths as YAML-friendly lists and strings."""
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, Path):
        return str(x)
    return x


def oneshot(model, tokenizer=None, calibration=None, recipe: "str | Path | dict | Recipe" = None, *,
            out: str | Path | None = None, overwrite: bool = False, device: str | None = None, progress: bool = False,
            log=print):
    """Run a recipe on a model already in memory (changed in place, on any device); the run's report.

    ``calibration``: token windows (n × L tensor) or text file(s), default the recipe's; a save stage writes
    ``out``. The same stages as ``maskopt run`` on the same model give the same weights."""
    from .run.job import run_on  # noqa: PLC0415

    if recipe is None:
        raise RecipeError("oneshot needs a recipe (a YAML file, YAML text, a dict or a Recipe)")
    r = recipe if isinstance(recipe, Recipe) else Recipe.load(recipe)
    stages = r.build(overwrite=overwrite, progress=progress, device=device)
    if calibration is None:
        calibration = list(r.calibration.get("texts") or [])
    elif isinstance(calibration, (str, Path)):
        calibration = [calibration]
    record = {**r.to_dict(), "model": None}
    return run_on(stages, model, tokenizer, calibration, out=out if out is not None else r.out, log=log,
                  device=device, progress=progress, recipe=record, **r.calibration_settings())
