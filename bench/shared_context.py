"""Zero-shot with each context run once (`maskopt.shared_context_lm`) against lm-eval's HFLM: time and answers.

Scores one folder on some of the seven tasks twice, in one process, with the same limit and seed: lm-eval's
``HFLM`` as it is, then ``SharedContextLM``. A row per run in bench/results/shared_context.jsonl: seconds of each,
the speed-up, and per task the share of documents whose acc and acc_norm agree (the scorer's fidelity on a real
model; its exactness on small ones is tests/test_shared_context_lm.py).

    export MASKOPT_SMOLLM_F32=~/.cache/maskopt/smollm2-135m-f32
    .venv/bin/python bench/shared_context.py ~/.cache/maskopt/peer-models/alps-50pct --tasks hellaswag arc_easy \
        openbookqa boolq --limit 100 --threads 1
    .venv/bin/python bench/shared_context.py --table
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import RESULTS, read_jsonl, write_md  # noqa: E402

JSONL = RESULTS / "shared_context.jsonl"


def run(folder: str, tasks: list[str], limit: int, threads: int) -> dict:
    import torch  # noqa: PLC0415

    from maskopt.model.loading import load_model  # noqa: PLC0415
    from maskopt.zeroshot import default_task_data, zero_shot  # noqa: PLC0415

    torch.set_num_threads(threads)
    model, tok = load_model(folder, progress=False)
    out = {}
    for name, share in (("hflm", False), ("shared", True)):
        t = time.time()
        with torch.no_grad():
            res, docs = zero_shot(model, tok, tasks, task_data=default_task_data(tasks), limit=limit or None,
                                  batch_size=8, seed=0, return_docs=True, share_context=share)
        out[name] = {"seconds": time.time() - t, "tasks": res, "docs": docs}
    agree = {}
    for t in tasks:
        a, b = out["hflm"]["docs"][t], out["shared"]["docs"][t]
        assert a["doc_id"] == b["doc_id"]
        agree[t] = {m: sum(x == y for x, y in zip(a[m], b[m], strict=True)) / len(a[m]) for m in ("acc", "acc_norm")
                    if m in a}
    row = {"folder": str(folder), "tasks": tasks, "limit": limit or None, "threads": threads,
           "docs": {t: len(out["hflm"]["docs"][t]["doc_id"]) for t in tasks},
           "seconds_hflm": out["hflm"]["seconds"], "seconds_shared": out["shared"]["seconds"],
           "speedup": out["hflm"]["seconds"] / out["shared"]["seconds"], "agree": agree,
           "acc": {t: [out[k]["tasks"][t]["acc"] for k in ("hflm", "shared")] for t in tasks}}
    RESULTS.mkdir(parents=True, exist_ok=True)
    with JSONL.open("a") as f:
        f.write(json.dumps(row) + "\n")
    return row


def write_table() -> str:
    lines = ["Zero-shot scored twice in one process (`bench/shared_context.py`): lm-eval's HFLM, then each context "
             "run once (`SharedContextLM`); seconds include lm-eval's task building; agreement = share of documents "
             "with the same acc / acc_norm.", "",
             "| folder | tasks (documents) | threads | HFLM s | shared s | speed-up | acc agree | acc_norm agree |",
             "|---|---|---:|---:|---:|---:|---|---|"]
    for r in read_jsonl(JSONL):
        docs = ", ".join(f"{t} {n}" for t, n in r["docs"].items())
        ag = {m: ", ".join(f"{100 * a[m]:.1f}%" for a in r["agree"].values() if m in a) for m in ("acc", "acc_norm")}
        lines.append(f"| {Path(r['folder']).name} | {docs} | {r['threads']} | {r['seconds_hflm']:.0f} | "
                     f"{r['seconds_shared']:.0f} | {r['speedup']:.2f}× | {ag['acc']} | {ag['acc_norm']} |")
    return write_md("shared_context", lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder", nargs="?")
    ap.add_argument("--tasks", nargs="+", default=["hellaswag", "arc_easy", "openbookqa", "boolq"])
    ap.add_argument("--limit", type=int, default=100, help="documents per task (0: the whole sets)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--table", action="store_true")
    a = ap.parse_args()
    if a.folder:
        print(json.dumps(run(a.folder, a.tasks, a.limit, a.threads), indent=1))
    if a.table or a.folder:
        print(write_table())


if __name__ == "__main__":
    main()
