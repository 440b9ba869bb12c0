"""Does chat-formatted calibration change the scoreboard of an instruct model? SmolLM2-135M-Instruct pruned with the
same method on (a) the raw calibration split of protocol v2 and (b) the same text as chat conversations rendered by
the model's chat template (bench/chat_calib.py), scored by protocol v2 (WikiText, english-heldout, tuning text,
zero-shot with a recorded limit) and compared pairwise on the same windows.

    .venv/bin/python bench/chat_vs_raw.py --methods sparsegpt wanda --zeroshot-limit 200
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from common import RESULTS, ROOT, model_path

ROWS = RESULTS / "chat_calib.jsonl"
WORK = Path.home() / ".cache" / "maskopt" / "chat-vs-raw"


def main() -> None:
    sys.path.insert(0, str(ROOT / "bench"))
    from protocol import compare, write_splits  # noqa: PLC0415

    ap = argparse.ArgumentParser()
    ap.add_argument("--methods", nargs="+", default=["sparsegpt"])
    ap.add_argument("--sparsity", default="0.5")
    ap.add_argument("--zeroshot-limit", type=int, default=200)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    chat = WORK / "chat-calib.jsonl"
    subprocess.run([sys.executable, str(ROOT / "bench" / "chat_calib.py"), "--out", str(chat)], check=True, cwd=ROOT)
    sources = {"raw": write_splits()["calib"], "chat": str(chat)}
    for method in a.methods:
        scores = {}
        for kind, calib in sources.items():
            out = WORK / f"{method}-{a.sparsity}-{kind}"
            t0 = time.time()
            subprocess.run([sys.executable, "-m", "maskopt", "prune", str(model_path("smollm")), "--method", method,
                            "--sparsity", a.sparsity, "--calib", calib, "--nsamples", "128", "--seqlen", "256",
                            "--no-eval", "-q", "--threads", str(a.threads), "--out", str(out), "--overwrite"],
                           check=True, cwd=ROOT)
            seconds = time.time() - t0
            js = WORK / f"{method}-{a.sparsity}-{kind}.json"
            subprocess.run([sys.executable, str(ROOT / "bench" / "protocol.py"), "score", str(out), "--json", str(js),
                            "--threads", str(a.threads), "--zeroshot-limit", str(a.zeroshot_limit)], check=True, cwd=ROOT)
            scores[kind] = json.loads(js.read_text())
            report = json.loads((out / "maskopt_report.json").read_text())
            row = {"method": method, "sparsity": float(a.sparsity), "calibration": kind, "prune_s": seconds,
                   "mean_relative_error": report["summary"]["mean_relative_error"],
                   **{k: scores[kind][k]["ppl"] for k in ("wikitext", "heldout", "tune")},
                   "zeroshot_mean_acc": scores[kind].get("zeroshot", {}).get("mean_acc"),
                   "zeroshot_limit": a.zeroshot_limit}
            if kind == "chat":
                row["paired_vs_raw"] = {k: compare(scores["chat"], scores["raw"], k) for k in ("wikitext", "heldout")}
            with open(ROWS, "a") as f:
                f.write(json.dumps(row) + "\n")
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
