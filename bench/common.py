"""Shared helpers of the benchmark scripts: settings grid, one run per subprocess, JSON + Markdown."""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: no busy-waiting threads on shared cores

import json
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path

from maskopt.defaults import shared_dir

ROOT = Path(__file__).resolve().parents[1]
SHARED = shared_dir(required=False) or ROOT.parent / "shared"  # the one path constant of the bench
RESULTS = Path(os.environ.get("MASKOPT_BENCH_RESULTS") or ROOT / "bench" / "results")  # a grid run from a snapshot
MODELS = {
    "tiny": SHARED / "models" / "maskopt-tiny-llama",
    "smollm": SHARED / "models" / "smollm2-135m-instruct-q4_1",
}
CALIB = SHARED / "data" / "english-calib" / "calib.txt"


def model_path(name: str) -> Path:
    """The model folder of ``name``; for SmolLM2 a float32 copy converted from the GGUF (same weights, loads
    faster) when $MASKOPT_SMOLLM_F32 names one, else the GGUF in ../shared."""
    f32 = os.environ.get("MASKOPT_SMOLLM_F32")
    if name == "smollm" and f32 and (Path(f32) / "config.json").is_file():
        return Path(f32)
    return MODELS[name]
TEXTS = {
    "heldout": SHARED / "data" / "english-heldout" / "test.txt",
    "wikitext": SHARED / "data" / "wikitext-2-raw" / "test.txt",
}
SETTINGS = {"50%": ("per_row", 0.5), "60%": ("per_row", 0.6), "70%": ("per_row", 0.7), "2:4": ("2:4", 0.5),
            # the same sparsities with one count per matrix (unstructured), as the ALPS and SparseGPT papers report
            "50% per matrix": ("unstructured", 0.5), "60% per matrix": ("unstructured", 0.6),
            "70% per matrix": ("unstructured", 0.7)}


def run_child(script: str, args: list[str]) -> dict:
    """Run ``script --child ARGS`` in a fresh interpreter (honest peak memory); its last stdout line is JSON. The
    child's stderr (its progress) is passed on line by line as it comes — of a progress bar redrawn with carriage
    returns only its last state — so an hour-long row is not silent; a failed child's last lines are in the error."""
    t = time.time()
    proc = subprocess.Popen([sys.executable, script, "--child", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, cwd=ROOT)
    tail: deque[str] = deque(maxlen=100)

    def relay() -> None:
        for raw in proc.stderr:  # split on \n only: a bar's \r redraws stay one line, shown in its final state
            line = raw.decode(errors="replace").rstrip("\n").rsplit("\r", 1)[-1]
            tail.append(line)
            print(line, file=sys.stderr, flush=True)

    pump = threading.Thread(target=relay, daemon=True)
    pump.start()
    stdout = proc.stdout.read().decode()
    proc.wait()
    pump.join()
    if proc.returncode != 0:
        raise RuntimeError(f"child {args} failed:\n" + "\n".join(tail)[-3000:])
    res = json.loads(stdout.strip().splitlines()[-1])
    res["process_seconds"] = time.time() - t
    return res


def read_jsonl(path: Path) -> list[dict]:
    """The rows of a results file (one JSON object per line; none when the file does not exist)."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def write_md(name: str, lines: list[str]) -> str:
    """bench/results/<name>.md from its lines; returns the text."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    md = "\n".join(lines) + "\n"
    (RESULTS / f"{name}.md").write_text(md)
    return md


def save(name: str, payload: dict, table: str) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(payload, indent=2))
    (RESULTS / f"{name}.md").write_text(table)
    print(table)
