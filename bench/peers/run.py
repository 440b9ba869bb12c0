"""Run a peer on protocol v2 and score it with maskopt's own evaluator: the same calibration token ids (exported
from maskopt's window sampler), the same scoring code (bench/protocol.py). Writes
bench/results/peers/<peer>-<setting>.json, which `bench/smollm.py --table` reads as a **peer** row.

    .venv/bin/python bench/peers/run.py llmc-sparsegpt llmc-wanda --settings 50% 70%
    .venv/bin/python bench/peers/run.py alps --settings 50% 70% --alps-src ~/.cache/maskopt/alps-src

Peers: llmc-sparsegpt, llmc-wanda (llm-compressor's `oneshot` with SparseGPTModifier / WandaPruningModifier, in
the separate environment of bench/peers/README.md, --peers-python), alps (the ALPS authors' alps.py from the
checkout given by --alps-src, driven block by block; runs in maskopt's environment). Each peer prunes with its own
default pattern (unstructured per matrix at 50/60/70%; 2:4 at 2:4): the table says so. A result that exists is
skipped (--force prunes and scores again); the pruned folders stay in $MASKOPT_PEER_MODELS
(~/.cache/maskopt/peer-models).

Scoring again (the headline rows on the whole sets): another evaluation writes <peer>-<setting>-<tag>.json beside
the grid's, and a folder already pruned from the same calibration ids is scored without pruning again; the
scoreboard merges the scorings of one peer and setting (each measure from the scoring that covered most of it).
Merging needs one model: the rescore's NLL on the windows both scored must equal the grid's, or it is refused.

    .venv/bin/python bench/peers/run.py alps --settings 50% --alps-src CHECKOUT --wikitext-windows 0 --no-zeroshot
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
BENCH = HERE.parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))
from common import RESULTS, model_path  # noqa: E402

PEERS = {"llmc-sparsegpt": "llm-compressor SparseGPT", "llmc-wanda": "llm-compressor Wanda",
         "alps": "ALPS (authors' code)"}
SETTINGS = {"50%": (0.5, None), "60%": (0.6, None), "70%": (0.7, None), "2:4": (0.5, (2, 4))}
GRID_TAG = "W128 H128 T Z500"  # the scoreboard grid's evaluation: its results keep the plain name
DEFAULT_PEERS_PYTHON = Path.home() / ".cache" / "maskopt" / "peers-venv" / "bin" / "python"


def slug(setting: str) -> str:
    return setting.replace("%", "pct").replace(":", "of")


def result_path(peer: str, setting: str, tag: str, seed: int = 0) -> Path:
    """The peer's JSON: <peer>-<setting>.json for the grid's evaluation (W128 H128 T Z500), the tag appended for any
    other (a whole-test-set rescore, say), so that each scoring is kept and the scoreboard merges them; the tag's
    measures that were not scored ("Z–") are left out of the name (W128 H128 T Z– → W128-H128-T). A pruning from
    calibration windows of another seed goes to peers/seeds/<name>-seed<S>.json, outside the scoreboard."""
    name = f"{peer}-{slug(setting)}"
    if tag != GRID_TAG:
        name += "-" + "-".join(re.sub(r"[^A-Za-z0-9]+", "", t) for t in tag.split() if not t.endswith("–"))
    if seed:
        return RESULTS / "peers" / "seeds" / f"{name}-seed{seed}.json"
    return RESULTS / "peers" / f"{name}.json"


def same_model(a: dict, b: dict, rtol: float = 1e-5) -> bool:
    """Two scorings come from the same weights when the windows both scored have the same NLL sums."""
    from protocol import same_nll  # noqa: PLC0415

    x, y = a["wikitext"]["nll"], b["wikitext"]["nll"]
    return min(len(x), len(y)) > 0 and same_nll(x, y, rtol)


def prune(peer: str, setting: str, a: argparse.Namespace, windows: Path, folder: Path) -> Path:
    """Run the peer into ``folder``; returns its run record (peer_row.json) for the scorer."""
    sparsity, nm = SETTINGS[setting]
    model = a.model or model_path("smollm")
    if not (Path(model) / "config.json").is_file():
        raise SystemExit(f"{model} is not an HF folder: set MASKOPT_SMOLLM_F32 to the float32 copy of SmolLM2 "
                         "(the peers cannot read the GGUF), or pass --model")
    t = time.time()
    if peer.startswith("llmc-"):
        cmd = [str(a.peers_python), str(HERE / "llmcompressor_prune.py"), "--method", peer[5:],
               "--mask-structure", "0:0" if nm is None else f"{nm[0]}:{nm[1]}"]
    else:
        if not a.alps_src:
            raise SystemExit("alps needs --alps-src: the folder of a mazumder-lab/ALPS checkout")
        cmd = [sys.executable, str(HERE / "alps_prune.py"), "--alps-src", str(a.alps_src),
               "--nm", "0:0" if nm is None else f"{nm[0]}:{nm[1]}"]
    cmd += ["--model", str(model), "--windows", str(windows), "--sparsity", str(sparsity), "--out", str(folder),
            "--threads", str(a.threads)]
    print(" ".join(cmd), file=sys.stderr, flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT)
    run = json.loads((folder / "peer_run.json").read_text())
    run.update(model="smollm", method=f"peer:{peer}", peer_label=f"{PEERS[peer]} ({run['pattern']})",
               setting=setting, prune_wall_seconds=time.time() - t)
    extra = folder / "peer_row.json"
    extra.write_text(json.dumps(run))
    return extra


def pruned_folder(folder: Path, windows: Path) -> Path | None:
    """The run record of a peer already pruned into ``folder`` from these calibration ids, else None."""
    extra = folder / "peer_row.json"
    if not extra.is_file():
        return None
    ids = hashlib.sha256(np.load(windows).astype(np.int64).tobytes()).hexdigest()
    return extra if json.loads(extra.read_text()).get("windows_sha256") == ids else None


def run_one(peer: str, setting: str, a: argparse.Namespace, windows: Path) -> Path:
    from protocol import EvalConfig  # noqa: PLC0415

    cfg = EvalConfig(a.wikitext_windows, a.heldout_windows, zeroshot=not a.no_zeroshot,
                     zeroshot_limit=a.zeroshot_limit or None)
    out_json = result_path(peer, setting, cfg.tag(), a.calib_seed)
    if out_json.exists() and not a.force:
        print(f"{out_json} exists: skipped", file=sys.stderr)
        return out_json
    models = Path(os.environ.get("MASKOPT_PEER_MODELS", Path.home() / ".cache" / "maskopt" / "peer-models"))
    folder = models / (f"{peer}-{slug(setting)}" + (f"-seed{a.calib_seed}" if a.calib_seed else ""))
    extra = None if a.force else pruned_folder(folder, windows)
    if extra is None:
        extra = prune(peer, setting, a, windows, folder)
    else:
        print(f"{folder}: pruned earlier from the same calibration ids, scored again", file=sys.stderr, flush=True)
    tmp = folder / "peer_score.json"
    score = [sys.executable, str(BENCH / "protocol.py"), "score", str(folder), "--json", str(tmp), "--extra",
             str(extra), "--threads", str(a.threads), "--zeroshot-limit", str(a.zeroshot_limit),
             "--wikitext-windows", str(a.wikitext_windows), "--heldout-windows", str(a.heldout_windows)]
    score += ["--no-zeroshot"] if a.no_zeroshot else []
    subprocess.run(score, check=True, cwd=ROOT)
    row = json.loads(tmp.read_text())
    grid = result_path(peer, setting, GRID_TAG, a.calib_seed)
    if grid != out_json and grid.exists():  # the scoreboard merges the two scorings: they must be of one model
        if not same_model(row, json.loads(grid.read_text())):
            raise SystemExit(f"{folder} is not the model scored in {grid} (its NLL on the common windows differ): "
                             f"run the grid's scoring again with --force before merging a rescore")
        row["same_model_as"] = grid.name
    out_json.parent.mkdir(parents=True, exist_ok=True)
    out_json.write_text(json.dumps(row))
    tmp.unlink()
    return out_json


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("peers", nargs="+", choices=list(PEERS))
    ap.add_argument("--settings", nargs="+", default=["50%", "70%"], choices=list(SETTINGS))
    ap.add_argument("--peers-python", default=os.environ.get("MASKOPT_PEERS_PYTHON", DEFAULT_PEERS_PYTHON),
                    help="python of the llm-compressor environment (bench/peers/README.md)")
    ap.add_argument("--alps-src", default=None, help="folder of a mazumder-lab/ALPS checkout (alps.py)")
    ap.add_argument("--model", default=None, help="dense HF folder (default: $MASKOPT_SMOLLM_F32)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--zeroshot-limit", type=int, default=500, help="documents per task (0: the whole sets)")
    ap.add_argument("--wikitext-windows", type=int, default=128)
    ap.add_argument("--heldout-windows", type=int, default=128)
    ap.add_argument("--no-zeroshot", action="store_true", help="perplexities only (a whole-test-set rescore)")
    ap.add_argument("--force", action="store_true")
    ap.add_argument("--calib-seed", type=int, default=0,
                    help="seed of maskopt's window sampler (0: the protocol's); another seed gives the windows that "
                    "`bench/smollm.py --calib-seed` prunes from, for the spread between prunings")
    a = ap.parse_args()
    from protocol import CALIB_NSAMPLES, CALIB_SEQLEN, CALIB_SEED, cache_root, export_windows  # noqa: PLC0415

    if CALIB_SEED != 0:
        raise SystemExit("protocol.CALIB_SEED is no longer 0: --calib-seed's default must follow it")
    model = a.model or model_path("smollm")
    windows = cache_root() / f"calib-{Path(model).name}-{CALIB_NSAMPLES}x{CALIB_SEQLEN}-seed{a.calib_seed}.npy"
    if not windows.is_file():
        export_windows(windows, model, seed=a.calib_seed)
    for setting in a.settings:
        for peer in a.peers:
            try:
                print(run_one(peer, setting, a, windows), flush=True)
            except subprocess.CalledProcessError as e:  # one failed peer is reported, the others go on
                print(f"FAILED {peer} {setting}: {e}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
