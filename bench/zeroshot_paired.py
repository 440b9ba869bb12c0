"""Zero-shot accuracy compared document by document (protocol v2's seven tasks, the same documents for both models).

The scoreboard's zero-shot interval (± 1.96 se of each row's mean) is unpaired: two models scored on the same
documents differ far less than two independent samples would. This script scores pruned folders (any HF folder:
maskopt's, a peer's) with `maskopt.zeroshot.zero_shot(..., return_docs=True)` — the same lm-eval call, limit and
seed as `bench/protocol.py` — keeps every document's acc / acc_norm in bench/results/zeroshot_docs/<label>.json,
and compares two of them with a paired bootstrap stratified by task (`maskopt.zeroshot.paired_accuracy`: Δ = mean
over tasks of acc_A − acc_B). A row is appended to bench/results/zeroshot_paired.jsonl; --table writes the .md.

    export MASKOPT_SMOLLM_F32=~/.cache/maskopt/smollm2-135m-f32
    .venv/bin/python bench/zeroshot_paired.py score ~/.cache/maskopt/peer-models/alps-70pct --label authors-alps-70
    .venv/bin/python bench/zeroshot_paired.py compare maskopt-alps-owl-match-70 authors-alps-70
    .venv/bin/python bench/zeroshot_paired.py compare maskopt-alps-match-50 dense --without boolq   # one task left out
    .venv/bin/python bench/zeroshot_paired.py --table

A pipeline pruned several times (`bench/smollm.py --calib-seed`, `bench/peers/run.py --calib-seed`: other
calibration windows of the same text) against another: `groups` takes each side's scorings, Δ of the means over
prunings, with a two-level bootstrap (prunings and documents, `maskopt.zeroshot.pipeline_accuracy`), so the interval
carries the spread between prunings that a single pair hides; rows go to bench/results/zeroshot_groups.{jsonl,md}.

    .venv/bin/python bench/zeroshot_paired.py groups --a maskopt-alps-match-50-rerun maskopt-alps-match-50-seed1 \
        maskopt-alps-match-50-seed2 --b authors-alps-50 authors-alps-50-seed1 authors-alps-50-seed2 --paired-prunings

Whole validation sets, a few tasks at a time (HellaSwag's 10042 documents are 40168 loglikelihood requests, 3.5×
those of whole BoolQ, WinoGrande and ARC-Easy together): `--tasks` scores only
those tasks at `--limit`, and `--extend LABEL` takes the other tasks from an earlier scoring of the same folder. The
documents both scorings hold must get the same answers (the check that they are one model, recorded as
`extend_agree`); the result keeps each task's document count and says which tasks are whole.

Scoring runs each distinct context once (`maskopt.shared_context_lm`, recorded as `evaluator: shared-context`);
`--hflm` runs lm-eval's HFLM as it is (the scorings before that scorer existed, which carry no `evaluator`). An
extension records the extended scoring's evaluator too; its agreement check then also compares the two evaluators.

    .venv/bin/python bench/zeroshot_paired.py score FOLDER --label authors-alps-50-whole6 --limit 0 \
        --tasks boolq winogrande arc_easy --extend authors-alps-50
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import RESULTS, ROOT, read_jsonl, write_md  # noqa: E402

DOCS = RESULTS / "zeroshot_docs"
JSONL = RESULTS / "zeroshot_paired.jsonl"
GROUPS_JSONL = RESULTS / "zeroshot_groups.jsonl"


def whole_sizes() -> dict[str, int]:
    """Documents in each task's whole validation set (the seven tasks of protocol v2)."""
    from maskopt.zeroshot import PAPER_ALIAS, chance_accuracy  # noqa: PLC0415

    return {t: r["docs"] for t, r in chance_accuracy([PAPER_ALIAS])["tasks"].items()}


def limit_label(counts: dict[str, int], whole: dict[str, int]) -> str:
    """"all" when every task was scored on its whole set, else the tasks that were not, with their counts."""
    part = [f"{t} {n} of {whole[t]}" for t, n in counts.items() if n != whole[t]]
    return "all" if not part else "all but " + ", ".join(part)


def extend(base: dict, new: dict, whole: dict[str, int]) -> dict:
    """``new`` (a scoring of some tasks, on more documents) with the other tasks taken from ``base`` (an earlier
    scoring of the same folder). One model: on the documents both hold, the two must answer alike; the share that
    does is kept as ``extend_agree`` and anything under 99% is refused (a different model or evaluation).
    ``seconds`` of the result counts both scorings."""
    from maskopt.zeroshot import mean_accuracy  # noqa: PLC0415

    if base["folder"] != new["folder"]:
        raise ValueError(f"--extend needs a scoring of the same folder: {base['folder']} vs {new['folder']}")
    agree: dict[str, float] = {}
    for t, d in new["docs"].items():
        old = base["docs"].get(t)
        if old is None:
            raise ValueError(f"{base['label']} has no task {t} to check against")
        pos = {i: k for k, i in enumerate(d["doc_id"])}
        common = [(k, pos[i]) for k, i in enumerate(old["doc_id"]) if i in pos]
        if not common:
            raise ValueError(f"{t}: the two scorings share no document")
        agree[t] = sum(old["acc"][k] == d["acc"][j] for k, j in common) / len(common)
        if agree[t] < 0.99:
            raise ValueError(f"{t}: only {100 * agree[t]:.1f}% of the common documents get the same answer: "
                             f"{base['label']} is not a scoring of the same model")
    tasks = {t: (new if t in new["docs"] else base)["tasks"][t] for t in base["tasks"]}
    docs = {t: (new if t in new["docs"] else base)["docs"][t] for t in base["docs"]}
    counts = {t: len(d["doc_id"]) for t, d in docs.items()}
    return {**new, "tasks": tasks, **mean_accuracy(tasks), "docs": docs, "counts": counts,
            "limit": limit_label(counts, whole), "extends": base["label"], "extend_agree": agree,
            "evaluator_of_extended": base.get("evaluator", "hflm"),
            "seconds": base["seconds"] + new["seconds"]}


def score(folder: str, label: str, limit: int, threads: int, tasks: list[str] | None = None,
          base: str | None = None, share_context: bool = True) -> dict:
    import torch  # noqa: PLC0415

    from maskopt.model.loading import load_model  # noqa: PLC0415
    from maskopt.zeroshot import PAPER_ALIAS, default_task_data, mean_accuracy, zero_shot  # noqa: PLC0415

    if (tasks is None) != (base is None):
        raise SystemExit("--tasks and --extend go together: a few tasks scored again, the others from LABEL")
    prior = json.loads((DOCS / f"{base}.json").read_text()) if base else None
    torch.set_num_threads(threads)
    t = time.time()
    model, tok = load_model(folder, progress=False)
    with torch.no_grad():
        res, docs = zero_shot(model, tok, tasks or [PAPER_ALIAS], task_data=default_task_data(tasks) if tasks else None,
                              limit=limit or None, batch_size=8, seed=0, return_docs=True, share_context=share_context)
    out = {"label": label, "folder": str(folder), "limit": limit or None, "tasks": res, **mean_accuracy(res),
           "docs": docs, "seconds": time.time() - t, "evaluator": "shared-context" if share_context else "hflm"}
    if prior is not None:
        out = extend(prior, out, whole_sizes())
    DOCS.mkdir(parents=True, exist_ok=True)
    tmp = DOCS / f".{label}.json.tmp"
    tmp.write_text(json.dumps(out))
    tmp.replace(DOCS / f"{label}.json")
    return out


def without_tasks(record: dict, drop: list[str]) -> tuple[dict, float, float]:
    """A scoring's documents, mean acc and its standard error over the tasks not in ``drop``
    (``maskopt.zeroshot.mean_accuracy`` of those tasks, as the scoreboard's)."""
    from maskopt.zeroshot import mean_accuracy  # noqa: PLC0415

    unknown = sorted(set(drop) - set(record["docs"]))
    if unknown:
        raise SystemExit(f"--without: {record['label']} has no task {', '.join(unknown)} "
                         f"(its tasks: {', '.join(record['docs'])})")
    keep = [t for t in record["docs"] if t not in drop]
    if not keep:
        raise SystemExit("--without leaves no task to compare")
    means = mean_accuracy({t: record["tasks"][t] for t in keep})
    return {t: record["docs"][t] for t in keep}, means["mean_acc"], means["mean_acc_stderr"]


def compare(a: str, b: str, n_boot: int, without: list[str] | None = None) -> dict:
    """Paired Δ of A against B over their tasks (minus ``without``); the row is appended to the jsonl."""
    from maskopt.zeroshot import paired_accuracy  # noqa: PLC0415

    ra, rb = (json.loads((DOCS / f"{x}.json").read_text()) for x in (a, b))
    if ra["limit"] != rb["limit"]:
        raise SystemExit(f"{a} and {b} were scored with different limits ({ra['limit']} vs {rb['limit']})")
    without = sorted(set(without or []))
    (da, ma, sa), (db, mb, sb) = without_tasks(ra, without), without_tasks(rb, without)
    row = {"a": a, "b": b, "limit": ra["limit"], "mean_acc_a": ma, "mean_acc_b": mb,
           "acc": paired_accuracy(da, db, "acc", n_boot=n_boot),
           "acc_norm": paired_accuracy(da, db, "acc_norm", n_boot=n_boot),
           "unpaired_half_width": 1.96 * (sa ** 2 + sb ** 2) ** 0.5}
    if without:
        row["without"] = without
    with JSONL.open("a") as f:
        f.write(json.dumps(row) + "\n")
    return row


def cell(p: dict) -> str:
    """Δ [lo, hi] in points, ✓ / ✗ when the whole interval is above / below 0."""
    mark = " ✓" if p["lo"] > 0 else " ✗" if p["hi"] < 0 else ""
    return f"{100 * p['diff']:+.2f} [{100 * p['lo']:+.2f}, {100 * p['hi']:+.2f}]{mark}"


def limit_cell(r: dict) -> str:
    """The row's limit, and the tasks it left out."""
    return f"{r['limit']}" + (f" (without {', '.join(r['without'])})" if r.get("without") else "")


def groups(a: list[str], b: list[str], n_boot: int, without: list[str] | None = None,
           paired_prunings: bool = False, name: str | None = None) -> dict:
    """Δ of pipeline A (its prunings' scorings ``a``) against B over the prunings and the documents; the row is
    appended to zeroshot_groups.jsonl."""
    from maskopt.zeroshot import pipeline_accuracy  # noqa: PLC0415

    recs = {x: json.loads((DOCS / f"{x}.json").read_text()) for x in (*a, *b)}
    limits = {str(r["limit"]) for r in recs.values()}
    if len(limits) > 1:
        raise SystemExit(f"the scorings were made with different limits ({', '.join(sorted(limits))})")
    without = sorted(set(without or []))
    docs = {x: without_tasks(r, without)[0] for x, r in recs.items()}
    row = {"name": name or f"{a[0]} vs {b[0]}", "a": a, "b": b, "limit": recs[a[0]]["limit"],
           "paired_prunings": paired_prunings,
           **{m: pipeline_accuracy([docs[x] for x in a], [docs[x] for x in b], m, n_boot=n_boot,
                                   paired_prunings=paired_prunings) for m in ("acc", "acc_norm")}}
    if without:
        row["without"] = without
    with GROUPS_JSONL.open("a") as f:
        f.write(json.dumps(row) + "\n")
    return row


def write_groups_table() -> str:
    rows = read_jsonl(GROUPS_JSONL)
    last = {(tuple(r["a"]), tuple(r["b"]), tuple(r.get("without", ())), r["paired_prunings"]): r for r in rows}
    lines = ["Zero-shot, pipelines pruned several times (`bench/zeroshot_paired.py groups`): each side's prunings "
             "come from other calibration windows of the same text (seeds of the window sampler); Δ = mean over A's "
             "prunings of the mean-over-tasks acc − the same for B, in points; 95% interval of a two-level bootstrap "
             "(prunings drawn with replacement — the same draw on both sides when paired by seed — and each task's "
             "documents, 2000 resamples). Per-pruning means in the order of the labels. ✓ / ✗ = the whole interval "
             "above / below 0.", "",
             "| comparison | A prunings | B prunings | limit | A per pruning % | B per pruning % | Δ acc [95%] | "
             "P(A higher) | Δ acc_norm [95%] |", "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in last.values():
        limit = limit_cell(r)
        pa, pb = (" / ".join(f"{100 * m:.2f}" for m in r["acc"][k]) for k in ("means_a", "means_b"))
        lines.append(f"| {r['name']}{' (paired by seed)' if r['paired_prunings'] else ''} | {', '.join(r['a'])} | "
                     f"{', '.join(r['b'])} | {limit} | {pa} | {pb} | {cell(r['acc'])} | {r['acc']['p_a_higher']:.2f} "
                     f"| {cell(r['acc_norm'])} |")
    return write_md("zeroshot_groups", lines)


def write_table() -> str:
    rows = read_jsonl(JSONL)
    last = {(r["a"], r["b"], tuple(r.get("without", ()))): r for r in rows}
    lines = ["Zero-shot, paired by document (`bench/zeroshot_paired.py`): the seven tasks of protocol v2 (lm-eval, "
             "first `limit` documents of each), Δ = mean over tasks of (acc A − acc B) in points, 95% percentile "
             "interval of a paired bootstrap stratified by task (2000 resamples); the unpaired half-width is the "
             "scoreboard's ± 1.96 √(se_A² + se_B²) for comparison. ✓ / ✗ = the whole interval above / below 0. "
             "\"(without T)\" after the limit: task T left out of both means and of the bootstrap.", "",
             "| A | B | limit | mean acc A % | mean acc B % | Δ acc [95%] | P(A higher) | Δ acc_norm [95%] | "
             "unpaired ± |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in last.values():
        limit = limit_cell(r)
        lines.append(f"| {r['a']} | {r['b']} | {limit} | {100 * r['mean_acc_a']:.2f} | {100 * r['mean_acc_b']:.2f} "
                     f"| {cell(r['acc'])} | {r['acc']['p_a_higher']:.2f} | {cell(r['acc_norm'])} | "
                     f"{100 * r['unpaired_half_width']:.2f} |")
    return write_md("zeroshot_paired", lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--table", action="store_true")
    sub = ap.add_subparsers(dest="cmd")
    s = sub.add_parser("score")
    s.add_argument("folder")
    s.add_argument("--label", required=True)
    s.add_argument("--limit", type=int, default=500, help="documents per task (0: the whole sets)")
    s.add_argument("--threads", type=int, default=1)
    s.add_argument("--tasks", nargs="+", default=None, help="score only these tasks (with --extend)")
    s.add_argument("--hflm", action="store_true",
                   help="lm-eval's HFLM as it is (default: each context run once, maskopt.shared_context_lm)")
    s.add_argument("--extend", default=None, metavar="LABEL",
                   help="the other tasks from this earlier scoring of the same folder")
    c = sub.add_parser("compare")
    c.add_argument("a")
    c.add_argument("b")
    c.add_argument("--n-boot", type=int, default=2000)
    c.add_argument("--without", nargs="+", default=None, metavar="TASK",
                   help="leave these tasks out of both means (e.g. boolq, where the dense model is below the "
                        "majority answer); the row says so")
    g = sub.add_parser("groups")
    g.add_argument("--a", nargs="+", required=True, metavar="LABEL", help="pipeline A: one scoring per pruning")
    g.add_argument("--b", nargs="+", required=True, metavar="LABEL", help="pipeline B: one scoring per pruning")
    g.add_argument("--name", default=None, help="the row's name (default: the first labels)")
    g.add_argument("--paired-prunings", action="store_true",
                   help="A's i-th and B's i-th pruning share their calibration windows: draw them together")
    g.add_argument("--n-boot", type=int, default=2000)
    g.add_argument("--without", nargs="+", default=None, metavar="TASK", help="leave these tasks out of the means")
    a = ap.parse_args()
    if a.cmd == "groups":
        print(json.dumps(groups(a.a, a.b, a.n_boot, a.without, a.paired_prunings, a.name)))
        print(write_groups_table())
        return
    if a.cmd == "score":
        out = score(a.folder, a.label, a.limit, a.threads, a.tasks, a.extend, share_context=not a.hflm)
        print(json.dumps({k: out.get(k) for k in ("label", "mean_acc", "mean_acc_norm", "limit", "extend_agree",
                                                  "seconds")}))
    elif a.cmd == "compare":
        print(json.dumps(compare(a.a, a.b, a.n_boot, a.without)))
    if a.table or a.cmd == "compare":
        print(write_table())


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
