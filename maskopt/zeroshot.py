"""Zero-shot accuracy through the lm-eval harness (the evaluation of the pruning papers), offline.

The model stays in memory (lm-eval's ``HFLM`` wraps it). Tasks come from local files only, since the
Hugging Face hub is unreachable here:

* ``task_data={"boolq": "boolq.jsonl", ...}``: a built-in lm-eval task (its prompt, choices and metric)
  reading its evaluation split from a local JSON-lines / JSON / CSV / Parquet file with the same columns
  as the hub dataset (e.g. boolq: passage, question, label; arc_easy: question, choices, answerKey);
* ``include_path``: a folder of lm-eval task YAMLs (``dataset_path: json`` + ``dataset_kwargs.data_files``)
  whose tasks are then usable by name.

A task that would need the hub raises :class:`TaskDataError` naming the way out.
Scores: lm-eval's metrics per task (``acc``, ``acc_norm`` where the task defines it, ± stderr).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from .resample import percentiles, pruning_weights

PAPER_TASKS = ("boolq", "rte", "hellaswag", "winogrande", "arc_easy", "arc_challenge", "openbookqa")
PAPER_ALIAS = "paper"  # --tasks paper (or paper7): the seven tasks above, each read from its local file
PAPER_ALIASES = (PAPER_ALIAS, "paper7")
_BUILDERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}


class TaskDataError(ValueError):
    """A task cannot be loaded from local files."""


def default_task_dir() -> Path:
    """Where the seven paper tasks' validation files live: $MASKOPT_ZEROSHOT_DATA, else ``../shared/data/zeroshot``
    beside the source checkout (the project layout), else beside the current folder."""
    env = os.environ.get("MASKOPT_ZEROSHOT_DATA")
    if env:
        return Path(env)
    for root in (Path(__file__).resolve().parents[2], Path.cwd().parent, Path.cwd()):
        d = root / "shared" / "data" / "zeroshot"
        if d.is_dir():
            return d
    return Path(__file__).resolve().parents[2] / "shared" / "data" / "zeroshot"


def default_task_data(tasks: Sequence[str] = PAPER_TASKS, folder: str | Path | None = None) -> dict[str, Path]:
    """{task: FOLDER/TASK.validation.jsonl} for the paper tasks; a missing folder or file is a TaskDataError."""
    folder = Path(folder) if folder is not None else default_task_dir()
    out = {}
    for t in tasks:
        if t not in PAPER_TASKS:
            raise TaskDataError(f"no local default data for task {t!r} (only {', '.join(PAPER_TASKS)})")
        f = folder / f"{t}.validation.jsonl"
        if not f.is_file():
            raise TaskDataError(f"task {t}: {f} does not exist (set MASKOPT_ZEROSHOT_DATA to the folder of the "
                                f"seven *.validation.jsonl files, or give --task-data {t}=FILE)")
        out[t] = f
    return out


def expand_tasks(tasks: Sequence[str], task_data: Mapping[str, str | Path] | None = None,
                 task_data_dir: str | Path | None = None) -> tuple[list[str], dict[str, str | Path]]:
    """``paper`` / ``paper7`` stand for the seven paper tasks, each with its local default file unless ``task_data``
    names one; with ``task_data_dir`` every task without a file of its own reads DIR/NAME.validation.jsonl; other
    names pass through unchanged (a bundled task without data still needs --task-data)."""
    names: list[str] = []
    data = dict(task_data or {})
    for t in tasks:
        if t in PAPER_ALIASES:
            for p in PAPER_TASKS:
                if p not in names:
                    names.append(p)
            data = {**default_task_data([p for p in PAPER_TASKS if p not in data], task_data_dir), **data}
        elif t not in names:
            names.append(t)
    if task_data_dir is not None:
        for t in names:
            if t not in data:
                f = Path(task_data_dir) / f"{t}.validation.jsonl"
                if not f.is_file():
                    raise TaskDataError(f"task {t}: {f} does not exist (--task-data-dir holds NAME.validation.jsonl)")
                data[t] = f
    return names, data


def mean_accuracy(res: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """Means over tasks: ``acc``; ``acc_norm`` (a task without it counts with its acc, as in the Wanda and
    SparseGPT tables); and the standard error of each mean from the tasks' standard errors (independent
    samples: se = √(Σ se_t²) / n_tasks), where every task has one."""
    if not res:
        raise ValueError("no task results")
    accs = [r["acc"] for r in res.values()]
    norms = [r.get("acc_norm", r["acc"]) for r in res.values()]
    out = {"mean_acc": sum(accs) / len(accs), "mean_acc_norm": sum(norms) / len(norms), "n_tasks": len(res)}
    se = [r.get("acc_stderr") for r in res.values()]
    se_n = [r.get("acc_norm_stderr", r.get("acc_stderr")) if "acc_norm" in r else r.get("acc_stderr")
            for r in res.values()]
    if all(isinstance(x, float) for x in se):
        out["mean_acc_stderr"] = sum(x * x for x in se) ** 0.5 / len(se)
    if all(isinstance(x, float) for x in se_n):
        out["mean_acc_norm_stderr"] = sum(x * x for x in se_n) ** 0.5 / len(se_n)
    return out


def _offline() -> None:
    for k in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        os.environ.setdefault(k, "1")


# where the paper tasks live among lm-eval's bundled YAMLs (saves indexing all of them: ~10 s)
_PAPER_YAML = {"boolq": "super_glue/boolq/default.yaml", "rte": "glue/rte/default.yaml",
               "hellaswag": "hellaswag/hellaswag.yaml", "winogrande": "winogrande/default.yaml",
               "arc_easy": "arc/arc_easy.yaml", "arc_challenge": "arc/arc_challenge.yaml",
               "openbookqa": "openbookqa/openbookqa.yaml"}


def _builtin_yaml(name: str) -> Path | None:
    """Path of lm-eval's bundled YAML of task ``name`` (fast table first, then lm-eval's full index)."""
    import lm_eval.tasks
    from lm_eval.tasks import TaskManager

    rel = _PAPER_YAML.get(name)
    if rel is not None and (Path(lm_eval.tasks.__file__).parent / rel).is_file():
        return Path(lm_eval.tasks.__file__).parent / rel
    entry = TaskManager()._entry(name)  # noqa: SLF001 - indexes every bundled task
    return None if entry is None or entry.yaml_path is None else Path(entry.yaml_path)


def _task_config(name: str, yaml_path: Path, data: str | Path | None) -> dict[str, Any]:
    """The task's config as an inline spec; with ``data``, its evaluation split read from that local file.
    Without, a dataset on the hub is refused before any download attempt."""
    from lm_eval.tasks._yaml_loader import load_yaml

    cfg = dict(load_yaml(str(yaml_path), resolve_func=True))
    for key in ("tag", "group"):
        cfg.pop(key, None)
    if data is None:
        src = str(cfg.get("dataset_path", ""))
        if src not in set(_BUILDERS.values()) | {"text", "arrow"} and not Path(src).exists():
            raise TaskDataError(f"task {name!r} reads the dataset {src!r} from the Hugging Face hub, which is "
                                f"unreachable here; give its evaluation split as a local file: "
                                f"--task-data {name}=FILE.jsonl")
        return cfg
    path = Path(data)
    if not path.is_file():
        raise TaskDataError(f"task {name}: data file {path} does not exist")
    builder = _BUILDERS.get(path.suffix.lower())
    if builder is None:
        raise TaskDataError(f"task {name}: {path} must be one of {sorted(_BUILDERS)}")
    key = "test_split" if cfg.get("test_split") else "validation_split"  # the split lm-eval scores
    split = cfg.get(key) or "validation"
    cfg.update(dataset_path=builder, dataset_name=None, dataset_kwargs={"data_files": {split: str(path.resolve())}},
               training_split=None, fewshot_split=None, validation_split=None, test_split=None)
    cfg[key] = split
    return cfg


def build_tasks(tasks: Sequence[str], *, task_data: Mapping[str, str | Path] | None = None,
                include_path: str | Path | None = None):
    """(task manager, task specs for simple_evaluate): tasks of ``include_path`` by name, bundled tasks as
    inline configs (with their local data where given)."""
    from lm_eval.tasks import TaskManager

    if include_path is not None and not Path(include_path).is_dir():
        raise TaskDataError(f"task folder {include_path} does not exist")
    manager = TaskManager(include_defaults=False, include_path=str(include_path) if include_path else None)
    task_data = dict(task_data or {})
    unknown = set(task_data) - set(tasks)
    if unknown:
        raise TaskDataError(f"data given for task(s) {sorted(unknown)} that are not in --tasks")
    specs: list[str | dict[str, Any]] = []
    for name in tasks:
        if name not in task_data and manager._entry(name) is not None:  # noqa: SLF001 - a local YAML task
            specs.append(name)
            continue
        yaml_path = _builtin_yaml(name)
        if yaml_path is None:
            raise TaskDataError(f"unknown lm-eval task {name!r} (add its YAML folder with --task-dir)")
        specs.append(_task_config(name, yaml_path, task_data.get(name)))
    return manager, specs


def _prepare(tasks: Sequence[str], task_data: Mapping[str, str | Path] | None, include_path: str | Path | None,
             task_data_dir: str | Path | None) -> tuple[list[str], Any, list]:
    """(task names, task manager, specs) of a request, offline: what zero_shot scores and chance_accuracy counts."""
    if not tasks:
        raise TaskDataError("no tasks given")
    names, data = expand_tasks(tasks, task_data, task_data_dir)
    _offline()
    return names, *build_tasks(names, task_data=data, include_path=include_path)


def chance_accuracy(tasks: Sequence[str], *, task_data: Mapping[str, str | Path] | None = None,
                    include_path: str | Path | None = None, limit: int | None = None,
                    task_data_dir: str | Path | None = None) -> dict[str, Any]:
    """Expected accuracy of answering uniformly at random, on exactly the documents :func:`zero_shot` scores:
    per task mean over its first ``limit`` documents of 1 / (number of choices lm-eval offers), the same for acc
    and acc_norm; plus ``mean_acc`` over tasks. The floor a model's score is read against (a score near it says
    the model does not solve the task at all)."""
    from itertools import islice

    tasks, manager, specs = _prepare(tasks, task_data, include_path, task_data_dir)
    loaded = manager.load(specs)["tasks"]
    res: dict[str, Any] = {}
    for name in tasks:
        task = loaded[name]
        inv = [1.0 / len(task.doc_to_choice(doc)) for doc in islice(task.eval_docs, limit or None)]
        if not inv:
            raise TaskDataError(f"task {name}: no documents to score")
        res[name] = {"acc": sum(inv) / len(inv), "acc_norm": sum(inv) / len(inv), "docs": len(inv)}
    return {"tasks": res, "mean_acc": sum(r["acc"] for r in res.values()) / len(res), "limit": limit or None}


def _needs_hub(exc: Exception) -> bool:
    text = f"{type(exc).__name__}: {exc}".lower()
    return any(s in text for s in ("offline", "connection", "couldn't reach", "hub", "resolve", "not found on"))


@torch.no_grad()
def zero_shot(model, tokenizer, tasks: Sequence[str], *, task_data: Mapping[str, str | Path] | None = None,
              include_path: str | Path | None = None, limit: int | None = None, batch_size: int = 8,
              num_fewshot: int = 0, seed: int = 0, task_data_dir: str | Path | None = None,
              return_docs: bool = False, share_context: bool = True) -> Any:
    """{task: {metric: value}} (``acc``, ``acc_norm``, ``…_stderr``) of an in-memory causal LM. The task name
    ``paper`` runs the seven tasks of the Wanda / SparseGPT papers from their local files (default_task_data).

    ``return_docs``: return (that dict, {task: {"doc_id": [...], "acc": [...], "acc_norm": [...]}}), the score of
    every document (ordered by doc_id), for paired comparisons of two models on the same documents
    (:func:`paired_accuracy`).

    ``share_context`` (default): each distinct context runs once and its choices on its cached keys/values
    (:class:`~maskopt.shared_context_lm.SharedContextLM`, lm-eval's numbers up to rounding); False: lm-eval's
    ``HFLM`` as it is."""
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM

    from maskopt.shared_context_lm import SharedContextLM

    tasks, manager, specs = _prepare(tasks, task_data, include_path, task_data_dir)
    lm = (SharedContextLM if share_context else HFLM)(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
    # bootstrap_iters=1: acc and acc_norm are means, for which lm-eval then gives the closed-form standard error
    # (no resampling happens); 0 would drop the standard errors.
    try:
        out = simple_evaluate(model=lm, tasks=specs, task_manager=manager, num_fewshot=num_fewshot, limit=limit,
                              log_samples=return_docs, bootstrap_iters=1, random_seed=seed, numpy_random_seed=seed,
                              torch_random_seed=seed, fewshot_random_seed=seed, verbosity="ERROR")
    except Exception as e:  # noqa: BLE001 - lm-eval / datasets raise many types for a missing dataset
        if _needs_hub(e):
            raise TaskDataError(f"a task needs its dataset from the Hugging Face hub, which is unreachable ({e}); "
                                "give local files with --task-data NAME=FILE or --task-dir") from None
        raise
    res: dict[str, dict[str, float]] = {}
    for name, metrics in out["results"].items():
        row = {}
        for k, v in metrics.items():
            if isinstance(v, (int, float)) and "," in k:
                metric, _filter = k.split(",", 1)
                row[metric] = float(v)
        res[name] = row
    if not return_docs:
        return res
    docs: dict[str, dict[str, list]] = {}
    for name, samples in out["samples"].items():
        rows = sorted(samples, key=lambda x: x["doc_id"])
        docs[name] = {"doc_id": [int(x["doc_id"]) for x in rows]}
        for metric in ("acc", "acc_norm"):
            if all(metric in x for x in rows):
                docs[name][metric] = [float(x[metric]) for x in rows]
    return res, docs


def paired_accuracy(docs_a: Mapping[str, Mapping[str, Sequence]], docs_b: Mapping[str, Mapping[str, Sequence]],
                    metric: str = "acc", *, n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> dict[str, Any]:
    """Model A against model B on the same documents: Δ = mean over tasks of (acc_A − acc_B), with a percentile
    interval from a paired bootstrap stratified by task (each task's documents resampled with replacement, the same
    resample for both models), and the share of resamples in which A is higher. ``metric`` "acc_norm" uses a task's
    acc where it has no acc_norm (as mean_accuracy does). Both must hold the same tasks and documents (doc_id)."""
    if set(docs_a) != set(docs_b) or not docs_a:
        raise ValueError(f"paired comparison needs the same tasks: {sorted(docs_a)} vs {sorted(docs_b)}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    gen = torch.Generator().manual_seed(seed)
    total = torch.zeros(n_boot, dtype=torch.float64)
    per_task: dict[str, float] = {}
    for task in sorted(docs_a):
        a, b = docs_a[task], docs_b[task]
        if list(a["doc_id"]) != list(b["doc_id"]):
            raise ValueError(f"{task}: the two results hold different documents")
        key = metric if metric in a and metric in b else "acc"
        d = torch.tensor(a[key], dtype=torch.float64) - torch.tensor(b[key], dtype=torch.float64)
        per_task[task] = float(d.mean())
        idx = torch.randint(len(d), (n_boot, len(d)), generator=gen)
        total += d[idx].mean(1)
    total /= len(docs_a)
    lo, hi = percentiles(total, level)
    return {"diff": sum(per_task.values()) / len(per_task), "lo": lo, "hi": hi,
            "p_a_higher": float((total > 0).double().mean()), "per_task": per_task, "metric": metric,
            "docs": {t: len(docs_a[t]["doc_id"]) for t in sorted(docs_a)}, "level": level}


def pipeline_accuracy(prunings_a: Sequence[Mapping[str, Mapping[str, Sequence]]],
                      prunings_b: Sequence[Mapping[str, Mapping[str, Sequence]]], metric: str = "acc", *,
                      paired_prunings: bool = False, n_boot: int = 2000, level: float = 0.95,
                      seed: int = 0) -> dict[str, Any]:
    """Pipeline A against pipeline B, each pruned several times (other calibration windows): Δ = mean over A's
    prunings of the mean-over-tasks accuracy − the same for B. The interval is a two-level bootstrap: each resample
    draws the prunings of each side with replacement (the same draw for both sides when ``paired_prunings``: A's
    i-th and B's i-th share their calibration windows) and each task's documents with replacement (one draw for
    every model), so it carries the spread between prunings as well as the sampling of documents. Every pruning
    must hold the same tasks and documents."""
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if not prunings_a or not prunings_b:
        raise ValueError("each pipeline needs at least one pruning")
    tasks = sorted(prunings_a[0])
    every = [*prunings_a, *prunings_b]
    for p in every:
        if sorted(p) != tasks or not tasks:
            raise ValueError(f"every pruning needs the same tasks: {tasks} vs {sorted(p)}")
        for t in tasks:
            if list(p[t]["doc_id"]) != list(prunings_a[0][t]["doc_id"]):
                raise ValueError(f"{t}: the prunings hold different documents")
    gen = torch.Generator().manual_seed(seed)
    na, nb = len(prunings_a), len(prunings_b)
    wa, wb = pruning_weights(na, nb, n_boot, gen, paired_prunings)
    total = torch.zeros(n_boot, dtype=torch.float64)
    means_a, means_b = torch.zeros(na, dtype=torch.float64), torch.zeros(nb, dtype=torch.float64)
    for task in tasks:
        key = metric if all(metric in q[task] for q in every) else "acc"
        xa, xb = (torch.tensor([p[task][key] for p in side], dtype=torch.float64) for side in (prunings_a, prunings_b))
        means_a += xa.mean(1) / len(tasks)
        means_b += xb.mean(1) / len(tasks)
        idx = torch.randint(xa.shape[1], (n_boot, xa.shape[1]), generator=gen)
        ra = torch.stack([x[idx].mean(1) for x in xa], 1)  # n_boot × na: each pruning on the resampled documents
        rb = torch.stack([x[idx].mean(1) for x in xb], 1)
        total += ((wa * ra).sum(1) - (wb * rb).sum(1)) / len(tasks)
    lo, hi = percentiles(total, level)
    return {"diff": float(means_a.mean() - means_b.mean()), "lo": lo, "hi": hi,
            "p_a_higher": float((total > 0).double().mean()), "means_a": means_a.tolist(),
            "means_b": means_b.tolist(), "metric": metric, "paired_prunings": paired_prunings, "level": level,
            "docs": {t: len(prunings_a[0][t]["doc_id"]) for t in tasks}}
