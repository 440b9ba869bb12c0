"""Recovery against a fair reference (issue 20, part 2), SmolLM2-135M, evaluation protocol v2 (`bench/protocol.py`).

Every recovery setting (a stage, its lr and steps, its retraining data, its objective) is run twice: on a pruned
model (its explicit masks kept) and on the dense model (**dense + the same retraining**: the same windows, steps
and lr; MaskLoRA on a dense model is plain LoRA, `full` is full fine-tuning). Language-modelling retraining on
WikiText improves the dense model on WikiText too, so a recovered model is compared with that reference, not
with the dense model that was never retrained. Two settings need no second run: reconstruction towards the dense
model and distillation from it leave the dense model unchanged (its loss is zero at the start and its gradient
too), so their reference is the dense row itself.

Objectives: `lm` — maskopt's own recovery stages (`--recover` specs, e.g. `masklora:lr=1e-3,steps=32`, `full`,
`block`), run through `maskopt.run_on` on the windows below; `kd` — the same PERP stages with `loss=kd`: the same
trainable parameters (MaskLoRA factors + norms/biases, or every kept weight for `full`) trained to match the dense
model's next-token distribution (KL(dense ‖ student) per token, temperature 1; `lm_weight`, `temperature` as
options) instead of the text's next token.

Retraining data (`--data`, windows of 256 tokens joined by '+'): `wiki:N` — N windows (seed 0) of the protocol's
calibration text (the first 90% of WikiText-2 valid; `wiki:128` are exactly the protocol's calibration windows);
`en:N` — N windows of ../shared/data/english-calib (NLTK corpora, the **same source as english-heldout**: a row
trained on it has english-heldout in its domain, marked "in-domain" in the table); `gen:N` — N windows sampled
from the dense model itself (temperature 1) after an 8-token prefix from a WikiText calibration window (its own
distribution, cached under ~/.cache/maskopt/recovery-v2/). The tuning text (last 10% of WikiText-2 valid) and the
evaluation texts are never in a training set.

Evaluation levels (`--eval`): `tune` — tuning-text perplexity only (every choice is made on it); `ppl` — the
protocol's three perplexities (WikiText-2 test W128, english-heldout H128, tuning); `full` — plus zero-shot on the
seven tasks (`--zeroshot-limit`, 500). A trained model is saved to ~/.cache/maskopt/recovery-v2/<key> so a later
row at a higher level scores it without retraining. Rows are appended to bench/results/recovery_v2.jsonl as they
finish; `--table` writes bench/results/recovery_v2.md. The unrecovered dense/pruned rows of the higher levels are
read from bench/results/smollm_v2.jsonl (the same protocol, windows and code).

    export MASKOPT_SMOLLM_F32=~/.cache/maskopt/smollm2-135m-f32
    .venv/bin/python bench/recovery_v2.py --masks sparsegpt-50 dense --recover masklora:lr=1e-3 --data wiki:128 --eval tune
    .venv/bin/python bench/recovery_v2.py --masks sparsegpt-50 --objective kd --recover masklora --data wiki:128
    .venv/bin/python bench/recovery_v2.py --table
"""
from __future__ import annotations

import argparse
import fcntl
import json
import os
import re
import sys
import time
from pathlib import Path

from common import RESULTS, ROOT, SHARED, model_path

JSONL = RESULTS / "recovery_v2.jsonl"
V2_ROWS = RESULTS / "smollm_v2.jsonl"
CACHE = Path(os.environ.get("MASKOPT_RECOVERY_CACHE", Path.home() / ".cache" / "maskopt" / "recovery-v2"))
MASK_ROOT = Path(os.environ.get("MASKOPT_BENCH_MASKS", Path.home() / ".cache" / "maskopt" / "bench-masks"))
MASKS = {"sparsegpt-50": "smollm-sparsegpt-50_-uniform-refitno-128x256-v2",
         "wanda-50": "smollm-wanda-50_-uniform-refitno-128x256-v2",
         "alps-match-50": "smollm-alps-50_-uniform-refitno-128x256-v2-matchdense0.25",
         # the same command pruned again on another machine: a different mask (ALPS's floating-point order), the
         # same one each time it was pruned on this project's CPU machines since; bench/smollm.py writes it to the
         # first folder name, renamed to this one before use
         "alps-match-50-rerun": "smollm-alps-50_-uniform-refitno-128x256-v2-matchdense0.25-rerun",
         # Wanda 50% pruned again here: tuning 59.62 against the scoreboard mask's 59.41 (another machine's order)
         "wanda-50-rerun": "smollm-wanda-50_-uniform-refitno-128x256-v2-rerun"}
# mask → its unrecovered scoreboard row: (method, setting, match)
V2_METHOD = {"sparsegpt-50": ("sparsegpt", "50%", "pruned"), "wanda-50": ("wanda", "50%", "pruned"),
             "alps-match-50": ("alps", "50%", "dense"), "dense": ("dense", "–", "pruned")}
EN_CALIB = SHARED / "data" / "english-calib" / "calib.txt"
SEQLEN = 256
MICRO_BATCH = 2  # distillation: windows per forward/backward (gradients accumulated over the batch of 8)
LEVELS = ("tune", "ppl", "full")
# masks whose unrecovered scores are not scoreboard rows: their rescoring (W128 H128 T) and zero-shot files
RERUNS = {"alps-match-50-rerun": ("reruns-alps-match-50-W128-H128-T.json", "zeroshot_docs/maskopt-alps-match-50-rerun.json"),
          "wanda-50-rerun": ("reruns-wanda-50-T.json", "zeroshot_docs/maskopt-wanda-50-rerun.json")}


# ---- keys ------------------------------------------------------------------------------------------------------
def config_key(mask: str, objective: str, recover: str, data: str) -> str:
    return f"{mask}|{objective}|{recover}|{data}"


def folder_of(key: str) -> Path:
    return CACHE / re.sub(r"[^A-Za-z0-9._=-]+", "_", key)


# ---- data ------------------------------------------------------------------------------------------------------
def gen_windows(n: int, tok, dense, seed: int = 0):
    """n windows of SEQLEN tokens: an 8-token prefix of a WikiText calibration window, then the dense model's own
    samples (temperature 1, no top-k/top-p). Cached (they depend only on n's prefix order and the seed)."""
    import torch  # noqa: PLC0415

    from protocol import calibration_windows, write_splits  # noqa: PLC0415

    path = CACHE / f"gen-{SEQLEN}-seed{seed}.pt"
    have = torch.load(path) if path.is_file() else torch.empty(0, SEQLEN, dtype=torch.long)
    if have.shape[0] >= n:
        return have[:n]
    prefixes = calibration_windows(tok, dense, max(n, 128), SEQLEN, seed + 1, write_splits())[:, :8]
    out = [have]
    dense.eval()
    torch.manual_seed(seed + 1000 + have.shape[0])
    for s in range(have.shape[0], n, 32):
        p = prefixes[s : min(n, s + 32)]
        with torch.no_grad():
            g = dense.generate(input_ids=p, attention_mask=torch.ones_like(p), do_sample=True, temperature=1.0,
                               top_k=0, top_p=1.0, max_new_tokens=SEQLEN - 8, min_new_tokens=SEQLEN - 8,
                               pad_token_id=tok.eos_token_id or 0)
        out.append(g[:, :SEQLEN])
        print(f"generated {s + p.shape[0]}/{n} windows", file=sys.stderr, flush=True)
    allw = torch.cat(out)
    CACHE.mkdir(parents=True, exist_ok=True)
    torch.save(allw, path)
    return allw[:n]


def make_data(spec: str, tok, dense):
    """Training windows of a data spec ('wiki:128', 'wiki:64+en:64', 'gen:128'), concatenated."""
    import torch  # noqa: PLC0415

    from maskopt.data import make_windows  # noqa: PLC0415
    from protocol import write_splits  # noqa: PLC0415

    parts = []
    for item in spec.split("+"):
        name, _, n = item.partition(":")
        n = int(n or 128)
        if name == "wiki":
            parts.append(make_windows([write_splits()["calib"]], tok, dense, n, SEQLEN, 0))
        elif name == "en":
            parts.append(make_windows([str(EN_CALIB)], tok, dense, n, SEQLEN, 0))
        elif name == "gen":
            parts.append(gen_windows(n, tok, dense))
        else:
            raise ValueError(f"unknown data {name!r} (wiki, en, gen)")
    return torch.cat(parts)


def in_domain_heldout(data: str) -> bool:
    return "en" in [d.partition(":")[0] for d in data.split("+")]


# ---- one row ---------------------------------------------------------------------------------------------------
def score(model, tok, level: str, zeroshot_limit: int, log) -> dict:
    from protocol import EvalConfig, evaluate, score_text, write_splits  # noqa: PLC0415

    if level == "tune":
        cfg = EvalConfig(zeroshot=False)
        r = score_text(model, tok, Path(write_splits()["tune"]), 0, cfg)
        log(f"tune: ppl {r['ppl']:.2f} [{r['lo']:.2f}, {r['hi']:.2f}] ({r['seconds']:.0f} s)")
        return {"protocol": "v2", "eval": {"tune": True, "zeroshot": False, "level": "tune"}, "eval_tag": "T",
                "tune": r}
    cfg = EvalConfig(zeroshot=level == "full", zeroshot_limit=zeroshot_limit)
    out = evaluate(model, tok, cfg, log=log)
    out["eval"]["level"] = level
    return out


def child(a: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(a.threads)
    from maskopt.io import MASKS_FILE, load_masks, save_model
    from maskopt.model.adapters import get_adapter
    from maskopt.model.loading import load_model
    from maskopt.report import peak_memory_mb
    from maskopt.recover.config import PERP_MODES
    from maskopt.run.job import run_on
    from maskopt.stages import make_stage

    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    t0 = time.time()
    key = config_key(a.mask, a.objective, a.recover, a.data)
    folder = folder_of(key)
    train: dict = {}
    if a.recover != "none" and (folder / "recovery_v2.json").is_file():  # trained by an earlier row: score it
        model, tok = load_model(folder, progress=False)
        train = json.loads((folder / "recovery_v2.json").read_text())["train"]
        log(f"model from {folder}")
    else:
        src = model_path("smollm") if a.mask == "dense" else MASK_ROOT / MASKS[a.mask]
        model, tok = load_model(src, progress=False)
        if a.recover != "none":
            dense, _ = load_model(model_path("smollm"), progress=False) if a.mask != "dense" else (None, None)
            if a.mask == "dense":
                lin = get_adapter(model).named_linears(model)
                masks = {n: torch.ones_like(m.weight, dtype=torch.bool) for n, m in lin.items()}
            else:
                masks = load_masks(src / MASKS_FILE)
            windows = make_data(a.data, tok, dense if dense is not None else model)
            log(f"{key}: {windows.shape[0]} windows × {windows.shape[1]}")
            if a.objective == "kd" and a.mask == "dense":
                raise SystemExit("dense + distillation from itself is the dense model (zero loss, zero gradient)")
            # activation checkpointing in every PERP stage: the same numbers with a third of the memory (this
            # machine's RAM is shared with other jobs); recorded in the row's train config. kd: maskopt's PERP
            # with loss=kd (KL(dense ‖ model) per token), MICRO_BATCH windows per forward/backward
            extra = {"grad_checkpointing": True} | ({"loss": "kd", "micro_batch": MICRO_BATCH} if a.objective == "kd" else {})
            stages = []
            for r in a.recover.split("+"):
                if r.split(":")[0] not in PERP_MODES and a.objective == "kd":
                    raise SystemExit(f"distillation is a PERP loss: {r!r} is not a PERP stage")
                stages.append(make_stage(r, "recover", extra if r.split(":")[0] in PERP_MODES else None))
            rep = run_on(stages, model, tok, windows, dense=dense, masks=masks, progress=False, log=log)
            train = {k: {kk: vv for kk, vv in v.items() if kk != "losses"} for k, v in rep.recovery.items()}
            del dense
            train["windows"] = int(windows.shape[0])
            train["train_seconds"] = time.time() - t0
            save_model(model, tok, folder, overwrite=True)
            (folder / "recovery_v2.json").write_text(json.dumps({"key": key, "train": train}, default=str))
    model.eval()
    with torch.no_grad():
        scores = score(model, tok, a.eval, a.zeroshot_limit, log)
    row = {"model": "smollm", "mask": a.mask, "objective": a.objective, "recover": a.recover, "data": a.data,
           "key": key, "level": a.eval, **scores, "train": train, "seconds": time.time() - t0,
           "peak_memory_mb": peak_memory_mb()["cpu_rss"], "threads": a.threads,
           "folder": str(folder) if a.recover != "none" else None}
    print(json.dumps(row, default=str))


# ---- the table -------------------------------------------------------------------------------------------------
def load_rows() -> list[dict]:
    return [json.loads(ln) for ln in JSONL.read_text().splitlines() if ln.strip()] if JSONL.exists() else []


def v2_reference_rows() -> list[dict]:
    """The unrecovered dense / SparseGPT / Wanda rows of the scoreboard (same protocol), as rows of this table."""
    if not V2_ROWS.exists():
        return []
    out = []
    for ln in V2_ROWS.read_text().splitlines():
        r = json.loads(ln) if ln.strip() else None
        if not r or r.get("protocol") != "v2" or r["recover"] != "none" or r.get("refit") or \
                r.get("allocation", "uniform") != "uniform":  # the cached masks
            continue
        for mask, (m, s, match) in V2_METHOD.items():
            if r["method"] == m and (r["setting"] == s or m == "dense") and r.get("match", "pruned") == match and \
                    (match == "pruned" or r.get("match_strength") == 0.25):
                lvl = "full" if r.get("zeroshot") else "ppl"
                out.append({**r, "mask": mask, "objective": "lm", "recover": "none", "data": "–", "level": lvl,
                            "key": config_key(mask, "lm", "none", "–"), "source": "smollm_v2.jsonl"})
    for mask, (ppl_file, zs_file) in RERUNS.items():
        if not (RESULTS / ppl_file).is_file():
            continue
        r = json.loads((RESULTS / ppl_file).read_text())
        zs = json.loads((RESULTS / zs_file).read_text()) if (RESULTS / zs_file).is_file() else None
        out.append({**r, "zeroshot": zs, "eval_tag": r["eval_tag"].replace("Z–", f"Z{zs['limit'] or 'all'}") if zs else r["eval_tag"],
                    "mask": mask, "objective": "lm", "recover": "none", "data": "–",
                    "level": "full" if zs else "ppl" if r.get("wikitext") else "tune",
                    "key": config_key(mask, "lm", "none", "–"), "source": ppl_file})
    return out


def best_rows(rows: list[dict]) -> dict[str, dict]:
    """One row per configuration key: the most fully evaluated one."""
    best: dict[str, dict] = {}
    for r in rows:
        k = r["key"] if r["recover"] != "none" else config_key(r["mask"], "lm", "none", "–")
        if k not in best or LEVELS.index(r["level"]) >= LEVELS.index(best[k]["level"]):
            best[k] = r
    return best


def _ppl(r: dict | None, text: str, ci: bool = True) -> str:
    t = (r or {}).get(text)
    if not t:
        return "–"
    return f"{t['ppl']:.2f}" + (f" [{t['lo']:.2f}, {t['hi']:.2f}]" if ci else "")


def _zs(r: dict | None) -> str:
    z = (r or {}).get("zeroshot")
    if not z:
        return "–"
    return f"{100 * z['mean_acc']:.2f} ± {196 * z['mean_acc_stderr']:.2f} ({z.get('limit') or 'all'})"


def closed(r: dict, p0: dict | None, d0: dict | None, text: str) -> str:
    """Share of the pruned model's gap to dense closed: (P0 − R) / (P0 − D0) for perplexity, the other way round
    for accuracy."""
    if text == "zeroshot":
        get = lambda x: ((x or {}).get("zeroshot") or {}).get("mean_acc")  # noqa: E731
        a, b, c = get(r), get(p0), get(d0)
        if None not in (a, b, c) and b >= c:  # the pruned model is not below dense: no gap to close
            return f"no gap ({100 * (a - c):+.2f} pt vs dense)"
        return "–" if None in (a, b, c) else f"{100 * (a - b) / (c - b):.0f}%"
    get = lambda x: ((x or {}).get(text) or {}).get("ppl")  # noqa: E731
    a, b, c = get(r), get(p0), get(d0)
    return "–" if None in (a, b, c) or c == b else f"{100 * (b - a) / (b - c):.0f}%"


def reference_of(r: dict, best: dict[str, dict]) -> tuple[dict | None, str]:
    """The dense + the same retraining row: the dense model through the same objective/stage/data; for
    distillation and reconstruction, the dense model itself (they leave it unchanged)."""
    if r["mask"] == "dense":
        return None, ""
    if r["recover"] == "none":
        return best.get(config_key("dense", "lm", "none", "–")), "dense"
    if r["objective"] == "kd" or all(s.split(":")[0] in ("matrix", "subblock", "subblock_residual", "block", "blocks")
                                     for s in r["recover"].split("+")):
        return best.get(config_key("dense", "lm", "none", "–")), "dense (unchanged by it)"
    return best.get(config_key("dense", r["objective"], r["recover"], r["data"])), "dense + same"


def _ratio(r: dict | None, ref: dict | None, text: str) -> str:
    a, b = ((r or {}).get(text) or {}).get("ppl"), ((ref or {}).get(text) or {}).get("ppl")
    return "–" if a is None or b is None else f"{a / b:.3f}"


def table(rows: list[dict]) -> str:
    best = best_rows(v2_reference_rows() + rows)
    d0 = best.get(config_key("dense", "lm", "none", "–"))
    head = ("| mask | objective | recovery | data | evaluated | WikiText ppl [95%] | english-heldout ppl [95%] | "
            "tuning ppl | zero-shot mean acc % ± 95% (limit) | gap closed: WikiText / heldout / zero-shot | "
            "reference | ref. WikiText | ref. heldout | ref. tuning | ref. zero-shot | ÷ ref.: WikiText / heldout / "
            "tuning | train s |")
    lines = [head, "|" + "---|" * 5 + "---:|" * 12]

    def order(r):
        return (r["mask"] != "dense", r["mask"], r["recover"] != "none", r["objective"], r["data"], r["recover"])

    for r in sorted(best.values(), key=order):
        p0 = best.get(config_key(r["mask"], "lm", "none", "–"))
        ref, ref_name = reference_of(r, best)
        gaps = "–" if r["mask"] == "dense" or r["recover"] == "none" else " / ".join(
            closed(r, p0, d0, t) for t in ("wikitext", "heldout", "zeroshot"))
        data = r["data"] + (" (heldout in-domain)" if in_domain_heldout(r["data"]) else "")
        tr = r.get("train") or {}
        cells = [r["mask"], r["objective"] if r["recover"] != "none" else "–", r["recover"], data,
                 r.get("eval_tag", "–"), _ppl(r, "wikitext"), _ppl(r, "heldout"), _ppl(r, "tune", False), _zs(r),
                 gaps, ref_name or "–", _ppl(ref, "wikitext", False), _ppl(ref, "heldout", False),
                 _ppl(ref, "tune", False), _zs(ref),
                 " / ".join(_ratio(r, ref, t) for t in ("wikitext", "heldout", "tune")) if ref else "–",
                 f"{tr.get('train_seconds', 0):.0f}" if tr else "–"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


HEADER = """Recovery against a fair reference (issue 20, part 2; `bench/recovery_v2.py`). SmolLM2-135M (float32 copy of
the GGUF), masks of the protocol-v2 scoreboard (per row, 50%, calibrated on the first 90% of WikiText-2 valid).
Every recovery setting is run on the pruned model and on the dense model (**reference = dense + the same
retraining**: same windows, steps, lr; MaskLoRA on dense = LoRA, `full` = full fine-tuning); distillation (`kd`)
and reconstruction leave the dense model unchanged, so their reference is the dense row. Data: `wiki:N` = N
windows of 256 tokens (seed 0) of the calibration text (`wiki:128` = the protocol's calibration windows), `en:N` =
english-calib (same NLTK source as english-heldout: such rows are marked, their english-heldout is in-domain),
`gen:N` = text sampled from the dense model. One epoch = N/8 steps (batch 8). Evaluated: T = tuning text only
(last 10% of WikiText-2 valid, all its windows of 512: every choice is made on it); W128 H128 T = plus WikiText-2
raw test (first 128 windows of 512) and english-heldout (first 128 of 354) with bootstrap 95% intervals; Z500 =
plus zero-shot mean acc over the seven tasks (first 500 documents each) ± 1.96 se. Gap closed = (pruned − recovered) /
(pruned − dense) for perplexity, (recovered − pruned) / (dense − pruned) for accuracy, against the unrecovered
rows of `smollm_v2.jsonl`. ÷ ref. = perplexity ÷ the reference's (target on WikiText ≤ 1.10). CPU, 1 thread per
row on shared cores: times are pessimistic.

"""


def run_child(args: list[str], key: str) -> dict:
    """This script with --child ARGS in a fresh interpreter, its stderr streamed to CACHE/logs/<key>.log (progress
    of long rows); its last stdout line is the row."""
    import subprocess  # noqa: PLC0415

    logs = CACHE / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    t = time.time()
    with (logs / (folder_of(key).name + ".log")).open("a") as err:
        out = subprocess.run([sys.executable, __file__, "--child", *args], stdout=subprocess.PIPE, stderr=err,
                             text=True, cwd=ROOT)
    if out.returncode != 0:
        raise RuntimeError(f"child {args} failed with exit code {out.returncode} (log: {err.name})")
    res = json.loads(out.stdout.strip().splitlines()[-1])
    res["process_seconds"] = time.time() - t
    return res


def append_row(row: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    with JSONL.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.write(json.dumps(row, default=str) + "\n")
        fcntl.flock(f, fcntl.LOCK_UN)


def write_table() -> str:
    md = table(load_rows())
    (RESULTS / "recovery_v2.md").write_text(HEADER + md)
    return md


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--mask", default="sparsegpt-50", help=argparse.SUPPRESS)
    ap.add_argument("--masks", nargs="+", default=["sparsegpt-50", "dense"],
                    help=f"dense and/or {', '.join(MASKS)}")
    ap.add_argument("--objective", default="lm", choices=["lm", "kd"])
    ap.add_argument("--recover", nargs="+", default=["masklora"], help="recovery specs ('+' chains stages; 'none')")
    ap.add_argument("--data", nargs="+", default=["wiki:128"])
    ap.add_argument("--eval", default="tune", choices=LEVELS)
    ap.add_argument("--zeroshot-limit", type=int, default=500)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--table", action="store_true")
    a = ap.parse_args()
    if a.child:
        a.recover, a.data = a.recover[0], a.data[0]
        return child(a)
    if a.objective == "kd":  # rows are keyed by their spec: the default lr of loss=kd changed, so it is spelled out
        for rec in a.recover:
            if any(r.split(":")[0] != "none" and "lr=" not in r for r in rec.split("+")):
                raise SystemExit(f"--objective kd: give the lr in {rec!r} (e.g. masklora:lr=2e-3)")
    if not a.table:
        done = {(r["key"], r["level"]) for r in load_rows()}
        for data in a.data:
            for rec in a.recover:
                for mask in a.masks:
                    if mask == "dense" and (a.objective == "kd" or rec == "none"):
                        continue  # the dense row itself is the reference
                    key = config_key(mask, a.objective, rec, data if rec != "none" else "–")
                    if (key, a.eval) in done:
                        continue
                    args = ["--mask", mask, "--objective", a.objective, "--recover", rec, "--data",
                            data if rec != "none" else "–", "--eval", a.eval, "--zeroshot-limit",
                            str(a.zeroshot_limit), "--threads", str(a.threads)]
                    try:
                        row = run_child(args, key)
                    except RuntimeError as e:
                        print(f"FAILED {key}: {e}", file=sys.stderr, flush=True)
                        continue
                    append_row(row)
                    print(json.dumps({k: row[k]["ppl"] for k in ("wikitext", "heldout", "tune") if k in row}
                                     | {"key": key, "level": a.eval, "seconds": round(row["seconds"])}), flush=True)
    print(write_table())


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
