"""The evaluate stage: perplexity of the model as it is now, recorded under a label in the report."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ..perplexity import PerplexityCache, evaluate_texts, short_name
from . import Stage, register_stage


@dataclass
class EvaluateOptions:
    texts: list[str] = field(default_factory=list)  # text files to score
    label: str = "pruned"  # the column of the report's perplexity table ('dense', 'pruned', 'before', 'after')
    seqlen: int | None = None  # window length (default min(2048, context))
    max_windows: int | None = None  # cap on windows per text (None or 0: the whole text)
    batch_size: int = 4  # windows per forward
    cache: bool = False  # reuse a perplexity computed earlier for the same weights, text and settings
    tasks: list[str] = field(default_factory=list)  # zero-shot tasks through lm-eval (e.g. paper7: the seven paper tasks)
    task_data_dir: str | None = None  # folder of NAME.validation.jsonl (default for the paper tasks: ../shared/data/zeroshot)
    limit: int | None = None  # at most this many examples per task (recorded in the report)
    dtype: Literal["model", "float32"] = "model"  # evaluate in the model's dtype, or in a float32 copy of its weights

    def __post_init__(self) -> None:
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"evaluate: limit must be ≥ 1 (or none), got {self.limit}")
        if self.tasks:
            from ..zeroshot import expand_tasks  # noqa: PLC0415

            expand_tasks(self.tasks, None, self.task_data_dir)  # the local data files exist: checked before loading


@register_stage("evaluate")
class EvaluateStage(Stage):
    """Perplexity of the model as it is now, recorded under ``label`` in the report."""

    name = "evaluate"
    Options = EvaluateOptions
    main_rank_only = True

    def run(self, ctx) -> None:
        import torch  # noqa: PLC0415

        from ..model.loading import as_dtype  # noqa: PLC0415

        if ctx.stream is not None:
            if self.options.tasks:
                raise ValueError("--stream scores perplexity; zero-shot tasks need the whole model in memory")
            if self.options.dtype == "float32":
                raise ValueError("evaluate dtype=float32 converts a model in memory; with --stream pass --dtype float32")
            return self._run(ctx)
        with as_dtype(ctx.model, torch.float32 if self.options.dtype == "float32" else None):
            self._run(ctx)

    def _run(self, ctx) -> None:
        o: EvaluateOptions = self.options
        stream = ctx.stream
        cache = PerplexityCache() if o.cache and stream is None else None
        res = {}
        for text in o.texts:
            key = cache.key(ctx.model, text, o.seqlen, o.max_windows, ctx.device) if cache else None
            hit = cache.get(key) if cache else None
            if hit is not None:
                res[short_name(text)] = hit
                continue
            res.update(evaluate_texts(ctx.model, ctx.tokenizer, [text], seqlen=o.seqlen, max_windows=o.max_windows,
                                      batch_size=o.batch_size, device=ctx.device, progress=ctx.progress,
                                      label=o.label, stream=stream))
            if cache:
                cache.put(key, res[short_name(text)])
        if ctx.offload and stream is None:  # a streamed skeleton holds no block to move
            ctx.model.to("cpu")
        for text, ppl in res.items():
            ctx.report.perplexity.setdefault(text, {})[o.label] = ppl
            ctx.log(f"perplexity {text} ({o.label}): {ppl:.2f}")
        if o.tasks:
            from ..zeroshot import mean_accuracy, zero_shot  # noqa: PLC0415

            tasks = zero_shot(ctx.model, ctx.tokenizer, o.tasks, task_data_dir=o.task_data_dir, limit=o.limit)
            if ctx.offload:
                ctx.model.to("cpu")
            ctx.report.zero_shot[o.label] = {"tasks": tasks, **mean_accuracy(tasks), "limit": o.limit}
            ctx.log(f"zero-shot ({o.label}): mean acc {ctx.report.zero_shot[o.label]['mean_acc']:.4f} over "
                    f"{len(tasks)} tasks" + (f" (at most {o.limit} examples each)" if o.limit else ""))
