"""The SmolLM2-135M scoreboard: masks alone, then each with recovery; perplexity, layer error, time, memory.

Protocol (issue 12): calibration 128 × 256 tokens of WikiText-2 `valid.txt` (seed 0); perplexity on WikiText-2
raw `test.txt`, windows of 512 tokens, the first `--eval-max-windows` of them (32 by default ≈ the first 16 k
tokens, the protocol of ../shared/README's dense 28.8). Every row runs in its own interpreter (honest peak
memory) and is appended to `bench/results/smollm.jsonl` as soon as it finishes; rows already there are
skipped, so the grid can be stopped and restarted. `--table` rebuilds `bench/results/smollm.md` from it.
The model is the GGUF in ../shared, or a float32 folder converted from it (same weights, loads faster) when
$MASKOPT_SMOLLM_F32 names one (this project's runs used one).

Masks are cached: a mask row saves its pruned model under $MASKOPT_BENCH_MASKS (default
~/.cache/maskopt/bench-masks), and a recovery row of the same mask starts from that folder instead of pruning
again (its "prune s" is then the cached run's; its peak memory is the recovery run's own).

    .venv/bin/python bench/smollm.py --settings 50% 70% --methods wanda sparsegpt
    .venv/bin/python bench/smollm.py --settings 50% --methods wanda sparsegpt "sparseswaps:warm_start=sparsefw" \
        --recover none matrix subblock block full masklora:steps=100
    .venv/bin/python bench/smollm.py --table

Protocol v2 (issue 20, the default; `--protocol v1` is the one above, whose rows stay in smollm.jsonl): see
`bench/protocol.py`. Calibration and retraining windows from the first 90% of WikiText-2 valid, the last 10% a
tuning text that is never sampled; scores: WikiText-2 raw test perplexity on the first `--wikitext-windows` (128)
windows of 512 (0: all 595) with a bootstrap 95% interval over windows, english-heldout perplexity (out of
domain, `--heldout-windows`), tuning-text perplexity, zero-shot accuracy on the seven paper tasks
(`--zeroshot-limit` documents per task, recorded; 0: the whole validation sets). Rows go to
`bench/results/smollm_v2.jsonl`; the table adds the paired-bootstrap difference to SparseGPT at the same setting
and the peers' rows that `bench/peers/` wrote to `bench/results/peers/*.json`.

    .venv/bin/python bench/smollm.py --settings 50% 70% --methods wanda sparsegpt --threads 1
    .venv/bin/python bench/smollm.py --settings 50% --methods sparsegpt --wikitext-windows 0 --zeroshot-limit 0
    .venv/bin/python bench/smollm.py --settings 50% --methods sparsegpt --wikitext-windows -1 --heldout-windows -1
    .venv/bin/python bench/smollm.py --table
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import time
from pathlib import Path

from common import RESULTS, ROOT, SETTINGS, SHARED, model_path, read_jsonl, run_child

CALIB = SHARED / "data" / "wikitext-2" / "valid.txt"
TEXT = SHARED / "data" / "wikitext-2-raw" / "test.txt"
NAME = {"v1": "smollm", "v2": "smollm_v2"}  # results: bench/results/<name>.jsonl and .md (--name)
MASKS = ["magnitude", "wanda", "ria", "sparsegpt", "dsnot", "sparsefw", "sparseswaps",
         "sparseswaps:warm_start=sparsefw"]
PEERS_DIR = RESULTS / "peers"  # JSON rows written by bench/peers/ (the peers are run, not typed in)
# The v1 table's "peer (llm-compressor)" column was typed in by hand from an unrecorded run (SparseGPT 50% 51.2,
# 70% 199, 2:4 82.2; Wanda 50% 62.7): historical, no longer read. Protocol v2 runs the peers (bench/peers/).


TUNE_HEADER = (
    "Tuning text only (protocol v2: the last 10% of WikiText-2 valid, never sampled; all its windows of 512): the "
    "choices of issue 21 are made on this table, never on the reported texts. Rows of `smollm_v2.jsonl` (scored on "
    "the tuning text as well) are included. Made by\n\n"
    "    .venv/bin/python bench/smollm.py --name tuning_v2 --tune-only --no-reference --threads 1 "
    "--settings 50% 70% --methods sparsegpt alps [--match dense] [--allocation owl] [--refit yes]\n\n"
    "Prune times ran beside two other jobs on the 2 cores: not timings.\n\n")


def row_key(r: dict) -> tuple:
    return (r["model"], r["method"], r["setting"], r["recover"], r.get("allocation", "uniform"), r.get("refit", False),
            r.get("eval_tag"), r.get("match", "pruned"), r.get("match_strength", 1.0), r.get("calib_seed", 0))


def pipeline_key(r: dict) -> tuple:
    """row_key without the evaluation tag: rows of one pipeline scored more than once share it."""
    k = row_key(r)
    return k[:6] + k[7:]


def is_sparsegpt_reference(r: dict) -> bool:
    """Plain SparseGPT (no recovery, refit, allocation or match): the row every Δ vs SparseGPT is taken against."""
    return (r["method"] == "sparsegpt" and r["recover"] == "none" and not r.get("refit")
            and r.get("allocation", "uniform") == "uniform" and r.get("match", "pruned") == "pruned")


def mask_cache(a: argparse.Namespace) -> Path:
    """Folder of the pruned model of this row's mask (same model, method, setting, allocation, refit, data)."""
    root = Path(os.environ.get("MASKOPT_BENCH_MASKS", Path.home() / ".cache" / "maskopt" / "bench-masks"))
    key = f"{a.model}-{a.method}-{a.setting}-{a.allocation}-refit{a.refit[0]}-{a.nsamples}x{a.seqlen}"
    key += "" if a.protocol == "v1" else f"-{a.protocol}"  # v2 calibrates on another text: other masks
    key += "" if a.match == "pruned" else f"-match{a.match}" + ("" if a.match_strength == 1 else f"{a.match_strength:g}")
    key += f"-seed{a.calib_seed}" if a.calib_seed else ""  # other calibration windows: another mask
    return root / re.sub(r"[^A-Za-z0-9._=-]+", "_", key)


def covers(have: dict, want) -> bool:
    """True when a row evaluated with EvalConfig fields ``have`` (its "eval") scored at least what ``want`` asks:
    the same first windows or more of each text (0 = whole, −1 = not scored), the tuning text, as many zero-shot
    documents (None = whole sets). The dense reference is not scored again for a request it already covers."""
    def windows(h: int, w: int) -> bool:
        return w < 0 or h == 0 or (h > 0 and w > 0 and h >= w)

    z_have, z_want = have.get("zeroshot_limit") or 0, want.zeroshot_limit or 0
    return (windows(have.get("wikitext_windows", -1), want.wikitext_windows)
            and windows(have.get("heldout_windows", -1), want.heldout_windows)
            and (not want.tune or have.get("tune", False))
            and (not want.zeroshot or (have.get("zeroshot", False) and (z_have == 0 or 0 < z_want <= z_have))))


def eval_config(a: argparse.Namespace):
    from protocol import EvalConfig  # noqa: PLC0415

    if a.tune_only:  # choices on the tuning text alone: nothing else is scored
        return EvalConfig(wikitext_windows=-1, heldout_windows=-1, zeroshot=False)
    return EvalConfig(wikitext_windows=a.wikitext_windows, heldout_windows=a.heldout_windows,
                      zeroshot=not a.no_zeroshot, zeroshot_limit=a.zeroshot_limit or None)


def child(a: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(a.threads)
    from maskopt.config import PruneConfig
    from maskopt.run.job import JobInputs, run_job
    from maskopt.options import parse_kv
    from maskopt.stages.evaluate import EvaluateOptions, EvaluateStage
    from maskopt.stages.prune import PruneStage
    from maskopt.stages import make_stage

    from maskopt.io import MASKS_FILE
    from maskopt.report import load_report, peak_memory_mb
    from maskopt.stages.save import SaveOptions, SaveStage

    t0 = time.time()
    a.recover = a.recover[0]
    recover = [make_stage(r, "recover") for r in a.recover.split("+") if r != "none"]
    calib = CALIB
    if a.protocol == "v1":
        evaluate = EvaluateStage(EvaluateOptions([str(TEXT)], "ppl", 512, a.eval_max_windows, cache=a.method == "dense"))
    else:
        from protocol import protocol_stage, write_splits  # noqa: PLC0415

        calib, evaluate = Path(write_splits()["calib"]), protocol_stage(eval_config(a))
    cache = mask_cache(a)
    inputs = JobInputs(model_path(a.model), [str(calib)], a.nsamples, a.seqlen, seed=a.calib_seed, progress=False)
    report, out, cached = None, None, False
    reuse = recover or a.protocol != "v1"  # v2: a mask row scored again (e.g. on the whole sets) reuses its mask
    if a.method == "dense":
        stages = [evaluate]
    elif reuse and (cache / MASKS_FILE).is_file():  # the mask was made by an earlier row: start from it
        stages, cached = [*recover, evaluate], True
        inputs.model, inputs.dense, report = cache, model_path(a.model), load_report(cache)
        print(f"mask from {cache}", file=sys.stderr)
    else:
        pattern, sparsity = SETTINGS[a.setting]
        name, _, opts = a.method.partition(":")
        cfg = PruneConfig(method=name, sparsity=sparsity, pattern=pattern, nsamples=a.nsamples, seqlen=a.seqlen,
                          method_options=parse_kv(opts.split(",") if opts else []), progress=False,
                          reference=None if a.no_reference else "wanda", allocation=a.allocation,
                          refit=a.refit == ["yes"], match=a.match,
                          **({"match_strength": a.match_strength} if a.match == "dense" else {}))
        stages, out = [PruneStage(cfg), SaveStage(SaveOptions(overwrite=True)), *recover, evaluate], cache
        cache.parent.mkdir(parents=True, exist_ok=True)
    t_job = time.time()
    rep = run_job(stages, inputs, out=out, report=report, log=lambda m: print(m, file=sys.stderr, flush=True))
    if a.protocol == "v1":
        scores = {"ppl": next(iter(rep.perplexity.values()))["ppl"]}
    else:
        scores = evaluate.result
        scores["ppl"] = scores["wikitext" if "wikitext" in scores else "tune"]["ppl"]
        scores["eval_seconds"] = sum(scores[k]["seconds"] for k in ("wikitext", "heldout", "tune", "zeroshot")
                                     if k in scores)
        scores["calib_sha256"] = write_splits()["calib_sha256"]
    row = {"model": a.model, "method": a.method, "setting": a.setting, "recover": a.recover,
           "allocation": a.allocation, "refit": a.refit == ["yes"], **scores,
           **({"match": a.match, "match_strength": a.match_strength} if a.match != "pruned" else {}),
           **({"calib_seed": a.calib_seed} if a.calib_seed and a.method != "dense" else {}),  # dense: no calibration
           "mean_relative_error": rep.mean_relative_error() if rep.layers else 0.0,
           "mean_wanda_relative_error": rep.mean_reference_relative_error(),
           "layer_relative_errors": [r.relative_error for r in rep.layers],
           "sparsity": rep.sparsity, "prune_seconds": rep.prune_seconds,
           "recovery_seconds": {k: v.get("seconds") for k, v in rep.recovery.items()},
           "seconds": time.time() - t0, "peak_memory_mb": peak_memory_mb()["cpu_rss"], "mask_cached": cached,
           "threads": a.threads, "calibration": f"{a.nsamples}x{a.seqlen}", "job_seconds": time.time() - t_job}
    if a.protocol == "v1":
        row["eval_windows"] = a.eval_max_windows
    print(json.dumps(row))


def match_of(r: dict) -> str:
    return f"dense α={r.get('match_strength', 1.0):g}" if r.get("match") == "dense" else "pruned"


def mask_label(r: dict, with_match: bool = True) -> str:
    match = f" (match {match_of(r)})" if with_match and r.get("match") == "dense" and r["method"] != "dense" else ""
    seed = f" [calibration seed {r['calib_seed']}]" if r.get("calib_seed") and r["method"] != "dense" else ""
    return (r["method"] + (" (OWL)" if r.get("allocation") == "owl" else "") + match
            + (" + refit" if r.get("refit") else "") + seed)


def recovery_seconds(r: dict) -> float:
    return sum(v or 0 for v in (r.get("recovery_seconds") or {}).values())


def table(rows: list[dict]) -> str:
    dense = {r["model"]: r["ppl"] for r in rows if r["method"] == "dense"}
    lines = ["| model | setting | mask | recovery | ppl | ppl / dense | mean rel. layer error | "
             "vs Wanda | prune s | recovery s | peak MB | threads |", "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    order = {m: i for i, m in enumerate(["dense", *MASKS])}
    for r in sorted(rows, key=lambda r: (r["model"], r["setting"], order.get(r["method"], 99), r["method"],
                                         r["recover"])):
        d = dense.get(r["model"])
        w = r.get("mean_wanda_relative_error")
        rel = r["mean_relative_error"] / w if w else None
        setting = r["setting"] if r["method"] != "dense" else "–"
        cells = [r["model"], setting, mask_label(r), r["recover"], f"{r['ppl']:.2f}", f"{r['ppl'] / d:.3f}" if d else "–",
                 f"{r['mean_relative_error']:.4f}", f"{rel:.3f}" if rel else "–",
                 f"{r['prune_seconds']:.0f}" + ("*" if r.get("mask_cached") else ""), f"{recovery_seconds(r):.0f}",
                 f"{r['peak_memory_mb']:.0f}", str(r.get("threads", 2))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def recovery_table(rows: list[dict], setting: str = "50%") -> str:
    """Perplexity after each recovery (rows) of each mask (columns) at one setting; cell: ppl (recovery s, peak GB)."""
    rows = [r for r in rows if r["setting"] == setting and r.get("allocation", "uniform") == "uniform"]
    masks = list(dict.fromkeys(mask_label(r) for r in rows if r["recover"] != "none"))
    cell = {(mask_label(r), r["recover"]): r for r in rows if mask_label(r) in masks}
    recs = sorted({rec for _, rec in cell}, key=lambda x: (x != "none", x))
    lines = [f"| recovery at {setting} | " + " | ".join(masks) + " |", "|---|" + "---:|" * len(masks)]
    for rec in recs:
        out = []
        for m in masks:
            r = cell.get((m, rec))
            out.append("–" if r is None else f"{r['ppl']:.2f}" if rec == "none" else
                       f"{r['ppl']:.2f} ({recovery_seconds(r):.0f} s, {r['peak_memory_mb'] / 1024:.1f} GB)")
        lines.append(f"| {rec} | " + " | ".join(out) + " |")
    return "\n".join(lines) + "\n"


def load_peers() -> list[dict]:
    """Rows written by the peer runners (bench/peers/): each a protocol-v2 score of a peer's pruned folder."""
    rows = []
    for f in sorted(PEERS_DIR.glob("*.json")) if PEERS_DIR.is_dir() else []:
        r = json.loads(f.read_text())
        if r.get("protocol") == "v2":
            r.setdefault("method", f"peer:{r.get('peer', f.stem)}")
            r.update(recover=r.get("recover", "none"), refit=False, allocation="uniform", peer_file=f.name,
                     ppl=r["wikitext"]["ppl"], mask_cached=False)
            r.setdefault("peak_memory_mb", r.get("prune_peak_memory_mb"))
            r.setdefault("model", "smollm")
            rows.append(r)
    return rows


def _ci(t: dict | None) -> str:
    return "–" if not t else f"{t['ppl']:.2f} [{t['lo']:.2f}, {t['hi']:.2f}]"


def _diff(r: dict, ref: dict | None, text: str) -> str:
    from protocol import compare  # noqa: PLC0415

    if ref is None or ref is r or text not in r or text not in ref:
        return "–"
    c = compare(r, ref, text)
    mark = " ✓" if c["diff_hi"] < 0 else " ✗" if c["diff_lo"] > 0 else ""
    return f"{c['diff']:+.2f} [{c['diff_lo']:+.2f}, {c['diff_hi']:+.2f}]{mark}"


def prune_cell(r: dict, star_cached: bool = False) -> str:
    """A row's prune seconds for the tables; "– (stopped)" where its timing is void, * for a mask from the cache."""
    if r.get("timing_invalid"):
        return "– (stopped)"
    return f"{r.get('prune_seconds') or 0:.0f}" + ("*" if star_cached and r.get("mask_cached") else "")


def table_tune(rows: list[dict]) -> str:
    """The tuning-text table (choices are made here): every row's tuning perplexity, and for match='dense' the
    paired difference to the same mask (and calibration seed) with match='pruned' (rows of the scoreboard file count
    too); one row per calibration seed."""
    best: dict[tuple, dict] = {}
    for r in rows:
        if "tune" in r and r.get("protocol") == "v2" and not r["method"].startswith("peer:"):
            best.setdefault((r["method"], r["setting"], r.get("allocation", "uniform"), r.get("refit", False),
                             r["recover"], r.get("calib_seed", 0) if r["method"] != "dense" else 0, match_of(r)), r)
    out = ["| setting | mask | recovery | match | tuning ppl [95%] | Δ vs match=pruned (paired 95%) | prune s |",
           "|---|---|---|---|---:|---:|---:|"]
    for key, r in sorted(best.items(), key=lambda kv: (kv[0][1], kv[0][0], kv[0][2:])):
        ref = best.get(key[:-1] + ("pruned",)) if key[-1] != "pruned" else None
        out.append(f"| {r['setting']} | {mask_label(r, with_match=False)} | {r['recover']} | {key[-1]} | {_ci(r['tune'])} | "
                   f"{_diff(r, ref, 'tune')} | {prune_cell(r)} |")
    return "\n".join(out) + "\n"


def _zs(r: dict) -> str:
    z = r.get("zeroshot")
    if not z:
        return "–"
    se = z.get("mean_acc_stderr")
    lim = z.get("limit")
    return f"{100 * z['mean_acc']:.2f}" + (f" ± {196 * se:.2f}" if se else "") + f" ({lim or 'all'})"


def label_v2(r: dict) -> str:
    if r["method"].startswith("peer:"):
        return f"**peer** {r.get('peer_label', r['method'][5:])}"
    return mask_label(r)


_WHOLE = 10 ** 6  # the zero-shot extent of a row scored on the whole validation sets (no limit)


def _extent(r: dict, measure: str) -> int:
    """How much of a measure a row scored: windows scored, or documents per task (_WHOLE: no limit); −1: not scored."""
    if measure not in r:
        return -1
    if measure == "zeroshot":
        return r[measure].get("limit") or _WHOLE
    return len(r[measure].get("nll", []))


def same_scores(a: dict, b: dict, rtol: float = 1e-5) -> bool:
    """Two scorings are of one model when every text both scored has the same NLL on the windows both scored."""
    from protocol import same_nll  # noqa: PLC0415

    return all(same_nll(a.get(t, {}).get("nll", []), b.get(t, {}).get("nll", []), rtol)
               for t in ("wikitext", "heldout", "tune"))


def pick_rows(rows: list[dict]) -> list[dict]:
    """One row per configuration, each measure (WikiText, english-heldout, tuning text, zero-shot) taken from the
    row that scored the most of it (whole sets before limits, more windows first): a mask scored again on the whole
    test set keeps the zero-shot scores of its earlier row. The prune facts (time, memory, layer errors) are the row
    that pruned (not one that loaded the mask from the cache); eval s is the scorings' sum. eval_tag says what the
    merged row holds. Rows of one configuration that disagree on the windows both scored are not one model (a mask
    pruned again differently, say): merging them would be silently wrong, so it is refused."""
    groups: dict = {}
    for r in rows:
        groups.setdefault(pipeline_key(r), []).append(r)
    out = []
    for rs in groups.values():
        for r in rs[1:]:
            if not same_scores(rs[0], r):
                raise ValueError(f"{label_v2(r)} @ {r['setting']}: two rows ({rs[0].get('eval_tag')}, "
                                 f"{r.get('eval_tag')}) differ on the windows both scored, so they are not one model; "
                                 "remove the stale row or score the same mask again")
        base = dict(max(rs, key=lambda r: (not r.get("mask_cached", False), _extent(r, "zeroshot"),
                                           _extent(r, "wikitext"))))
        for m in ("wikitext", "heldout", "tune", "zeroshot"):
            top = max(rs, key=lambda r: _extent(r, m))
            if _extent(top, m) > _extent(base, m):
                base[m] = top[m]
        if "wikitext" in base:
            base["ppl"] = base["wikitext"]["ppl"]
        if len(rs) > 1:
            base["eval_seconds"] = sum(r.get("eval_seconds") or 0 for r in rs)
            from protocol import EvalConfig  # noqa: PLC0415

            z = _extent(base, "zeroshot")
            base["eval_tag"] = EvalConfig(wikitext_windows=_extent(base, "wikitext"),
                                          heldout_windows=_extent(base, "heldout"), tune="tune" in base,
                                          zeroshot=z >= 0, zeroshot_limit=None if z == _WHOLE else z).tag()
        out.append(base)
    return out


def over_dense(r: dict, dense: dict, text: str = "wikitext") -> float:
    """ppl_r / ppl_dense over the windows both scored (the first n: a row of 128 windows against a dense model
    scored on the whole set is compared on those 128); every window has the same token count."""
    a, b = r[text]["nll"], dense[text]["nll"]
    n = min(len(a), len(b))
    return math.exp((sum(a[:n]) - sum(b[:n])) / (n * (r[text]["seqlen"] - 1)))


def _ref(ref: dict, r: dict) -> dict | None:
    """SparseGPT's row at r's setting; a per-matrix setting without one is compared with per-row SparseGPT."""
    return ref.get(r["setting"]) or ref.get(r["setting"].removesuffix(" per matrix"))


def table_v2(rows: list[dict]) -> str:
    rows = pick_rows([r for r in rows if r.get("protocol") == "v2"])
    dense = next((r for r in rows if r["method"] == "dense"), None)
    ref = {r["setting"]: r for r in rows if is_sparsegpt_reference(r)}
    lines = ["| setting | mask | recovery | WikiText ppl [95%] | × dense | Δ vs SparseGPT (paired 95%) | "
             "english-heldout ppl [95%] | Δ heldout vs SparseGPT | tuning ppl | zero-shot mean acc % ± 95% (limit) | "
             "mean acc_norm % | vs Wanda error | prune s | eval s | peak MB | evaluated |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    order = {m: i for i, m in enumerate(["dense", *MASKS])}
    for r in sorted(rows, key=lambda r: (r["setting"] if r["method"] != "dense" else "", r["method"].startswith("peer:"),
                                         order.get(r["method"], 99), r["method"], r.get("refit", False), r["recover"])):
        w = r.get("mean_wanda_relative_error")
        rel = r["mean_relative_error"] / w if w and r.get("mean_relative_error") is not None else None
        z = r.get("zeroshot")
        cells = ["–" if r["method"] == "dense" else r["setting"], label_v2(r), r["recover"], _ci(r.get("wikitext")),
                 f"{over_dense(r, dense):.3f}" if dense and "wikitext" in r else "–",
                 _diff(r, _ref(ref, r), "wikitext"), _ci(r.get("heldout")),
                 _diff(r, _ref(ref, r), "heldout"), f"{r['tune']['ppl']:.2f}" if r.get("tune") else "–",
                 _zs(r), f"{100 * z['mean_acc_norm']:.2f}" if z else "–", f"{rel:.3f}" if rel else "–",
                 prune_cell(r, star_cached=True),
                 f"{r.get('eval_seconds') or 0:.0f}", f"{r.get('peak_memory_mb') or 0:.0f}", r.get("eval_tag", "–")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def chance_rows(rows: list[dict]) -> list[dict]:
    """The expected scores of answering at random (maskopt.zeroshot.chance_accuracy) at every zero-shot limit the
    rows used, as rows of the tasks table."""
    from maskopt.zeroshot import PAPER_ALIAS, chance_accuracy  # noqa: PLC0415

    limits = sorted({r["zeroshot"].get("limit") or 0 for r in rows if r.get("protocol") == "v2" and r.get("zeroshot")})
    out = []
    for lim in limits:
        c = chance_accuracy([PAPER_ALIAS], limit=lim or None)
        out.append({"method": "random guess (expected)", "setting": "–", "recover": "–", "chance": True,
                    "zeroshot": {**c, "mean_acc_norm": c["mean_acc"]}})
    return out


def tasks_table_v2(rows: list[dict], chance: list[dict] = ()) -> str:
    """Per-task zero-shot accuracy of every row that has it; ``chance`` rows (chance_rows) first, as the floor."""
    from maskopt.zeroshot import PAPER_TASKS  # noqa: PLC0415

    picked = sorted((r for r in pick_rows([r for r in rows if r.get("protocol") == "v2"]) if r.get("zeroshot")),
                    key=lambda r: (r["setting"] if r["method"] != "dense" else "", r["method"]))
    lines = ["| setting | mask | recovery | limit | " + " | ".join(PAPER_TASKS) + " | mean acc | mean acc_norm |",
             "|---|---|---|---:|" + "---:|" * (len(PAPER_TASKS) + 2)]
    for r in [*chance, *picked]:
        z = r["zeroshot"]
        cells = [f"{100 * z['tasks'][t]['acc']:.1f}" + (f" / {100 * z['tasks'][t]['acc_norm']:.1f}"
                 if "acc_norm" in z["tasks"][t] and not r.get("chance") else "") if t in z["tasks"] else "–"
                 for t in PAPER_TASKS]
        name = f"*{r['method']}*" if r.get("chance") else label_v2(r)
        lines.append(f"| {'–' if r['method'] == 'dense' else r['setting']} | {name} | {r['recover']} | "
                     f"{z.get('limit') or 'all'} | " + " | ".join(cells) + f" | {100 * z['mean_acc']:.2f} | "
                     f"{100 * z['mean_acc_norm']:.2f} |")
    return "\n".join(lines) + "\n"


def row_name(r: dict) -> str:
    return f"{label_v2(r)} @ {r['setting']} / {r['recover']}"


def compare_rows(rows: list[dict], a: str, b: str) -> str:
    """Paired bootstrap of two v2 rows (each named by a substring of 'mask @ setting / recovery') on every text."""
    from protocol import compare  # noqa: PLC0415

    rows = pick_rows([r for r in rows if r.get("protocol") == "v2"])
    found = []
    for q in (a, b):
        m = [r for r in rows if q in row_name(r)]
        exact = [r for r in m if row_name(r) == q]
        if len(exact) == 1:
            m = exact
        if len(m) != 1:
            raise SystemExit(f"{q!r} matches {len(m)} rows: " + "; ".join(row_name(r) for r in m or rows))
        found.append(m[0])
    out = [f"A = {row_name(found[0])}", f"B = {row_name(found[1])}"]
    for text in ("wikitext", "heldout", "tune"):
        if text in found[0] and text in found[1]:
            c = compare(found[0], found[1], text)
            verdict = "A lower" if c["diff_hi"] < 0 else "A higher" if c["diff_lo"] > 0 else "no resolved difference"
            out.append(f"{text}: ppl A {c['ppl_a']:.2f}, B {c['ppl_b']:.2f}; A − B {c['diff']:+.2f} "
                       f"[{c['diff_lo']:+.2f}, {c['diff_hi']:+.2f}], A / B {c['ratio']:.4f} [{c['ratio_lo']:.4f}, "
                       f"{c['ratio_hi']:.4f}] over {c['windows']} windows: {verdict}")
    return "\n".join(out)


def changes_table(v1_rows: list[dict], v2_rows: list[dict]) -> str:
    """The rows measured under both protocols: v1's WikiText perplexity (32 windows, calibration on all of valid)
    beside v2's (128 windows, calibration on its first 90%), each over its own dense, and per setting the order
    of the masks under each protocol (among the rows both have)."""
    from protocol import compare  # noqa: PLC0415

    def name(r: dict, k: tuple) -> str:
        return mask_label(r) + ("" if k[3] == "none" else f" + {k[3]}")

    v2 = {pipeline_key(r): r for r in pick_rows([r for r in v2_rows if r.get("protocol") == "v2"])}
    v1 = {pipeline_key(r): r for r in v1_rows if r.get("protocol", "v1") != "v2"}
    both = [k for k in v2 if k in v1]
    if not both:
        return "No row has been measured under both protocols yet.\n"
    d1 = next((r["ppl"] for k, r in v1.items() if k[1] == "dense"), None)
    dense2 = next((r for k, r in v2.items() if k[1] == "dense"), None)
    lines = ["| setting | mask | recovery | v1 ppl (32 windows) | v1 × dense | v2 ppl (WikiText) | v2 × dense |",
             "|---|---|---|---:|---:|---:|---:|"]
    for k in sorted(both, key=lambda k: (k[2] if k[1] != "dense" else "", k[1])):
        a, b = v1[k], v2[k]
        lines.append(f"| {'–' if k[1] == 'dense' else k[2]} | {mask_label(b)} | {k[3]} | {a['ppl']:.2f} | "
                     f"{a['ppl'] / d1:.3f} | {b['ppl']:.2f} | {over_dense(b, dense2):.3f} |" if d1 and dense2 else
                     f"| {k[2]} | {mask_label(b)} | {k[3]} | {a['ppl']:.2f} | – | {b['ppl']:.2f} | – |")
    notes = []
    for setting in sorted({k[2] for k in both if k[1] != "dense"}):
        ks = [k for k in both if k[2] == setting and k[1] != "dense"]
        if len(ks) < 2:
            continue
        n = min(len(v2[k]["wikitext"]["nll"]) for k in ks)  # v2 order over the windows every row scored
        k1, k2 = sorted(ks, key=lambda k: v1[k]["ppl"]), sorted(ks, key=lambda k: sum(v2[k]["wikitext"]["nll"][:n]))
        o1, o2 = [name(v1[k], k) for k in k1], [name(v2[k], k) for k in k2]
        shown = name(v2[k2[0]], k2[0])
        for a, b in zip(k2, k2[1:]):  # each step of the v2 order: resolved by the paired bootstrap, or not
            c = compare(v2[a], v2[b], "wikitext")
            shown += (" < " if c["diff_hi"] < 0 else " ≲ ") + name(v2[b], b)
        notes.append(f"- {setting}: v1 order {' < '.join(o1)}; v2 order {shown}: "
                     + ("**unchanged**" if o1 == o2 else "**changed**"))
        ref = next((k for k in ks if is_sparsegpt_reference(v2[k])), None)
        for k in [k for k in k1 if ref and k != ref and v1[k]["ppl"] < v1[ref]["ppl"]]:  # v1's "better than SparseGPT"
            held = []
            for text in ("wikitext", "heldout"):
                c = compare(v2[k], v2[ref], text)
                word = "holds" if c["diff_hi"] < 0 else "**reversed**" if c["diff_lo"] > 0 else "**not resolved**"
                held.append(f"{'WikiText' if text == 'wikitext' else 'english-heldout'} {c['diff']:+.2f} "
                            f"[{c['diff_lo']:+.2f}, {c['diff_hi']:+.2f}] {word}")
            notes.append(f"  - v1: {name(v1[k], k)} below SparseGPT ({v1[k]['ppl']:.2f} vs {v1[ref]['ppl']:.2f}); "
                         f"v2, paired: {'; '.join(held)}")
    return ("\n".join(lines) + "\n\n" + ("In the v2 orders, \"<\": the paired bootstrap interval of the WikiText difference "
            "lies below 0; \"≲\": lower, but the interval holds 0 (not resolved). Under each setting, every v1 claim \"below "
            "SparseGPT\" checked under v2 on both texts (row minus SparseGPT, paired 95%).\n\n" + "\n".join(notes) + "\n"
            if notes else ""))


V2_HEADER = """Scoreboard, protocol v2 (`bench/smollm.py`, `bench/protocol.py`; issue 20). SmolLM2-135M (float32 copy of the
GGUF in ../shared). Calibration (and any retraining): 128 × 256 tokens sampled (seed 0) from the first 90% of
WikiText-2 `valid.txt`; the last 10% is the tuning text (never sampled; "tuning ppl", all its windows of 512).
WikiText ppl: WikiText-2 raw test, the first 128 windows of 512 tokens (W128) or all 595 (Wall), with a percentile
bootstrap 95% interval over windows (2000 resamples); × dense: over the dense model on the windows both scored. english-heldout: NLTK corpora, out of WikiText's domain
(first 128 of 354 windows). Δ vs SparseGPT: ppl of the row minus maskopt's SparseGPT at the same setting on the
same windows (a "per matrix" setting — one kept count per matrix, unstructured; the others keep the same count in
every row — without its own SparseGPT row: per-row SparseGPT at that sparsity), paired bootstrap 95% interval; ✓ = lower with the whole interval below 0, ✗ = higher. Zero-shot: lm-eval
0.4 on the seven tasks of `../shared/data/zeroshot/` (validation splits), mean acc over the seven ± 1.96 × its
standard error; "(500)" = the first 500 documents of each task (BoolQ 500 of 3270, HellaSwag 500 of 10042,
WinoGrande 500 of 1267, ARC-Easy 500 of 570; RTE 277, ARC-Challenge 299 and OpenBookQA 500 are whole), "(all)" = the
whole sets. Peers (**peer**) are run by
`bench/peers/` on the same calibration token ids and scored by the same code. Times: CPU, shared cores, one
thread per row unless said; eval s is the scoring time; * = mask loaded from an earlier row's cache; "– (stopped)":
the row's process was stopped (SIGSTOP) while other measurements ran, so its wall time is no timing (the row's
"timing_invalid" says why).

"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--model", default="smollm", choices=["smollm", "tiny"])
    ap.add_argument("--methods", nargs="+", default=MASKS)
    ap.add_argument("--method", default="dense", help=argparse.SUPPRESS)
    ap.add_argument("--settings", nargs="+", default=["50%", "60%", "70%", "2:4"])
    ap.add_argument("--setting", default="50%", help=argparse.SUPPRESS)
    ap.add_argument("--recover", nargs="+", default=["none"],
                    help="recovery per row: 'none', a --recover spec, or several joined by '+'")
    ap.add_argument("--allocation", default="uniform", choices=["uniform", "owl"])
    ap.add_argument("--refit", nargs="+", default=["no"], choices=["no", "yes"],
                    help="least-squares refit of every layer after its mask (a row dimension: no, yes or both)")
    ap.add_argument("--match", default="pruned", choices=["pruned", "dense"],
                    help="each layer matches its output on the pruned inputs, or the dense model's (PruneConfig.match)")
    ap.add_argument("--match-strength", type=float, default=1.0, help="α of --match dense (PruneConfig.match_strength)")
    ap.add_argument("--tune-only", action="store_true",
                    help="v2: score the tuning text alone (for choices; use another --name than the scoreboard's)")
    ap.add_argument("--protocol", default="v2", choices=["v1", "v2"], help="evaluation protocol (see above)")
    ap.add_argument("--name", default=None, help="results file name under bench/results/ (default smollm_v2 / smollm)")
    ap.add_argument("--nsamples", type=int, default=128)
    ap.add_argument("--seqlen", type=int, default=256)
    ap.add_argument("--calib-seed", type=int, default=0,
                    help="seed of the calibration window sampler (0: the protocol's); another seed prunes another "
                    "mask from other windows of the same text, for the spread between prunings (not in the scoreboard: "
                    "give another --name)")
    ap.add_argument("--eval-max-windows", type=int, default=32, help="v1: windows of WikiText test")
    ap.add_argument("--wikitext-windows", type=int, default=128,
                    help="v2: first windows of WikiText test (0: all; -1: not scored, e.g. to add zero-shot to a row "
                    "scored with --no-zeroshot: the table merges the two)")
    ap.add_argument("--heldout-windows", type=int, default=128, help="v2: first windows of english-heldout (0: all; -1: not scored)")
    ap.add_argument("--zeroshot-limit", type=int, default=500, help="v2: documents per task (0: whole sets)")
    ap.add_argument("--no-zeroshot", action="store_true", help="v2: perplexities only")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-reference", action="store_true", help="skip the per-layer Wanda reference (faster)")
    ap.add_argument("--table", action="store_true", help="only rebuild bench/results/smollm.md")
    ap.add_argument("--compare", nargs=2, metavar=("A", "B"), default=None,
                    help="v2: paired bootstrap of two rows named by substrings of 'mask @ setting / recovery'")
    a = ap.parse_args()
    a.name = a.name or NAME[a.protocol]
    if a.child:
        return child(a)
    if a.calib_seed and a.name in NAME.values():
        raise SystemExit(f"--calib-seed {a.calib_seed}: the scoreboard's rows use the protocol's seed; write these "
                         "rows under another --name (e.g. seeds_v2)")
    RESULTS.mkdir(parents=True, exist_ok=True)
    jsonl = RESULTS / f"{a.name}.jsonl"
    rows = [json.loads(ln) for ln in jsonl.read_text().splitlines() if ln.strip()] if jsonl.exists() else []
    if a.compare:
        print(compare_rows(rows + load_peers(), *a.compare))
        return
    if not a.table:
        done = {row_key(r) for r in rows}
        common = ["--model", a.model, "--nsamples", str(a.nsamples), "--seqlen", str(a.seqlen), "--eval-max-windows",
                  str(a.eval_max_windows), "--threads", str(a.threads), "--allocation", a.allocation,
                  "--protocol", a.protocol, "--wikitext-windows", str(a.wikitext_windows), "--heldout-windows",
                  str(a.heldout_windows), "--zeroshot-limit", str(a.zeroshot_limit), "--match", a.match,
                   "--match-strength", str(a.match_strength), "--calib-seed", str(a.calib_seed)]
        common += ["--tune-only"] if a.tune_only else []
        common += ["--no-reference"] if a.no_reference else []
        common += ["--no-zeroshot"] if a.no_zeroshot else []
        want = eval_config(a) if a.protocol == "v2" else None
        tag = want.tag() if want else None
        todo = [("dense", "–", "none", "no")] + [(m, s, r, f) for s in a.settings for m in a.methods
                                                 for f in a.refit for r in a.recover]
        for method, setting, rec, refit in todo:
            key = (a.model, method, setting, rec, a.allocation if method != "dense" else "uniform", refit == "yes", tag,
                   a.match if method != "dense" else "pruned",
                   a.match_strength if method != "dense" and a.match == "dense" else 1.0,
                   a.calib_seed if method != "dense" else 0)
            if key in done or (method == "dense" and any(
                    r["method"] == "dense" and r["model"] == a.model
                    and (r.get("eval_tag") == tag or (want is not None and covers(r.get("eval", {}), want)))
                    for r in rows)):
                continue
            args = ["--method", method, "--setting", setting if setting != "–" else "50%", "--recover", rec,
                    "--refit", refit, *common]
            try:
                row = run_child(__file__, args)
            except RuntimeError as e:  # a failed row is reported, the grid goes on
                print(f"FAILED {method} {setting} {rec}: {e}", file=sys.stderr)
                continue
            if method == "dense":
                row["setting"] = "–"
            with jsonl.open("a") as f:
                f.write(json.dumps(row) + "\n")
            rows.append(row)
            done.add(row_key(row))
            print(json.dumps({k: v for k, v in row.items() if k not in ("layer_relative_errors", "wikitext", "heldout",
                                                                         "tune", "zeroshot")} |
                             {k: row[k]["ppl"] for k in ("wikitext", "heldout", "tune") if k in row}), flush=True)
    if a.tune_only:
        v2_file = RESULTS / f"{NAME['v2']}.jsonl"
        md = table_tune(rows + (read_jsonl(v2_file) if v2_file.exists() and a.name != NAME["v2"] else []))
        scored = any(r.get("eval", {}).get("wikitext_windows", -1) >= 0 for r in rows)  # the file's own table shows more
        (RESULTS / f"{a.name}{'-tune' if scored else ''}.md").write_text(TUNE_HEADER + md)
        print(md)
        return
    if a.protocol == "v2":
        seeded = any(r.get("calib_seed") for r in rows)  # other calibration windows: not the peers' (seed 0)
        allrows = rows + ([] if seeded else load_peers())
        md = table_v2(allrows)
        v1_file = RESULTS / f"{NAME['v1']}.jsonl"
        v1_rows = [json.loads(ln) for ln in v1_file.read_text().splitlines() if ln.strip()] if v1_file.exists() else []
        (RESULTS / f"{a.name}.md").write_text(
            V2_HEADER + md + "\nZero-shot accuracy per task (acc / acc_norm, %; the first row is the expected score of answering at "
            "random, on the same documents):\n\n" + tasks_table_v2(allrows, chance_rows(allrows))
            + "\nWhat changed from protocol v1 (`smollm.jsonl`) to v2, rows measured under both:\n\n"
            + changes_table(v1_rows, rows))
        print(md)
        return
    md = table(rows)
    (RESULTS / f"{a.name}.md").write_text(
        f"Scoreboard (`bench/smollm.py`): calibration 128 × 256 WikiText-2 valid, perplexity on "
        f"WikiText-2 raw test, windows of 512 (first {a.eval_max_windows}). CPU, 2 cores shared with other jobs: "
        f"times are pessimistic. Peak MB is the row's own process; * = mask loaded from the cache of an earlier "
        f"row (prune s is that row's).\n\n" + md + "\nRecovery of the same masks (perplexity; recovery time and the "
        f"row's peak memory):\n\n" + recovery_table(rows))
    print(md)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
