"""Perplexity of pipelines pruned several times (issue 20): one pruning per pipeline cannot tell a pipeline's
margin from the spread between its masks (ALPS + match 50% pruned twice differed by 3 zero-shot points). Each side
lists its prunings' scorings — a scored row as JSON (`bench/protocol.py score --json`, a peer's
`bench/results/peers/…json`) or one line of a JSONL (`FILE.jsonl:N`, the N-th line, 1-based: a
`bench/smollm.py --name seeds_v2 --calib-seed S` row) — and `maskopt.perplexity.pipeline_perplexity` compares the
means over prunings on every text all scorings hold (WikiText-2 test, english-heldout, the tuning text; the first
windows all of them scored), with a two-level bootstrap over windows and prunings. Rows go to
bench/results/pipelines_ppl.jsonl; the table to pipelines_ppl.md. Zero-shot: `bench/zeroshot_paired.py groups`.

    .venv/bin/python bench/pipelines.py --name "ALPS + match vs authors' ALPS @ 50%" --paired-prunings \\
        --a bench/results/reruns-alps-match-50-W128-H128-T.json bench/results/seeds_v2.jsonl:2 bench/results/seeds_v2.jsonl:3 \\
        --b bench/results/peers/alps-50pct.json bench/results/peers/seeds/alps-50pct-W128-H128-T-seed1.json …
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import RESULTS, ROOT, read_jsonl, write_md  # noqa: E402

JSONL = RESULTS / "pipelines_ppl.jsonl"
TEXTS = ("wikitext", "heldout", "tune")


def load_scoring(src: str) -> dict:
    """A scored row from ``FILE.json`` or line N of ``FILE.jsonl:N`` (1-based)."""
    path, _, line = src.rpartition(":") if src.rsplit(":", 1)[-1].isdigit() else (src, "", "")
    if not Path(path).is_file():
        raise SystemExit(f"{path}: no such file")
    if line:
        lines = Path(path).read_text().splitlines()
        if not 1 <= int(line) <= len(lines) or not lines[int(line) - 1].strip():
            raise SystemExit(f"{path} has no row on line {line} ({len(lines)} lines)")
        return json.loads(lines[int(line) - 1])
    return json.loads(Path(path).read_text())


def describe(r: dict) -> str:
    """What a scoring is, for the record: method (or folder), setting and calibration seed."""
    seed = r.get("calib_seed", 0)
    what = r.get("method") or r.get("folder", "?")
    return f"{what} {r.get('setting', '')} seed {seed}".strip()


def compare(a: list[str], b: list[str], name: str, paired: bool, n_boot: int = 2000) -> dict:
    from maskopt.perplexity import pipeline_perplexity  # noqa: PLC0415

    ra, rb = [load_scoring(x) for x in a], [load_scoring(x) for x in b]
    row = {"name": name, "a": a, "b": b, "a_what": [describe(r) for r in ra], "b_what": [describe(r) for r in rb],
           "paired_prunings": paired}
    for text in TEXTS:
        if not all(text in r and r[text].get("nll") for r in ra + rb):
            continue
        seqlens = {r[text]["seqlen"] for r in ra + rb}
        if len(seqlens) > 1:
            raise SystemExit(f"{text}: scored on windows of different lengths {sorted(seqlens)}")
        n = min(len(r[text]["nll"]) for r in ra + rb)
        tokens = [float(seqlens.pop() - 1)] * n
        row[text] = pipeline_perplexity([r[text]["nll"][:n] for r in ra], [r[text]["nll"][:n] for r in rb], tokens,
                                        paired_prunings=paired, n_boot=n_boot)
    if not any(t in row for t in TEXTS):
        raise SystemExit("no text is scored, with its windows' NLL, by every scoring")
    with JSONL.open("a") as f:
        f.write(json.dumps(row) + "\n")
    return row


def write_table() -> str:
    rows = read_jsonl(JSONL)
    last = {(r["name"], tuple(r["a"]), tuple(r["b"]), r["paired_prunings"]): r for r in rows}
    lines = ["Perplexity of pipelines pruned several times (`bench/pipelines.py`): a pipeline's perplexity is the mean "
             "over its prunings (other calibration windows: seeds of the window sampler); Δ = A − B with a 95% "
             "interval from a two-level bootstrap (windows jointly, prunings with replacement — one draw for both "
             "sides when paired by seed; 2000 resamples). Per-pruning values in the order of the sources. ✓ = the "
             "whole interval below 0 (A lower), ✗ = above.", "",
             "| comparison | text (windows) | A per pruning | B per pruning | A | B | Δ [95%] | A / B [95%] | "
             "P(A lower) |", "|---|---|---|---|---:|---:|---:|---:|---:|"]
    for r in last.values():
        for text in TEXTS:
            if text not in r:
                continue
            p = r[text]
            mark = " ✓" if p["diff_hi"] < 0 else " ✗" if p["diff_lo"] > 0 else ""
            pa, pb = (" / ".join(f"{x:.2f}" for x in p[k]) for k in ("per_pruning_a", "per_pruning_b"))
            lines.append(f"| {r['name']}{' (paired by seed)' if r['paired_prunings'] else ''} | {text} "
                         f"({p['windows']}) | {pa} | {pb} | {p['ppl_a']:.2f} | {p['ppl_b']:.2f} | {p['diff']:+.2f} "
                         f"[{p['diff_lo']:+.2f}, {p['diff_hi']:+.2f}]{mark} | {p['ratio']:.3f} [{p['ratio_lo']:.3f}, "
                         f"{p['ratio_hi']:.3f}] | {p['p_a_better']:.2f} |")
    return write_md("pipelines_ppl", lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--a", nargs="+", metavar="SRC", help="pipeline A: one scoring per pruning (FILE.json | FILE.jsonl:N)")
    ap.add_argument("--b", nargs="+", metavar="SRC", help="pipeline B: one scoring per pruning")
    ap.add_argument("--name", default=None)
    ap.add_argument("--paired-prunings", action="store_true",
                    help="A's i-th and B's i-th pruning share their calibration windows: draw them together")
    ap.add_argument("--n-boot", type=int, default=2000)
    ap.add_argument("--table", action="store_true", help="only rebuild the table")
    a = ap.parse_args()
    if not a.table:
        if not a.a or not a.b:
            ap.error("--a and --b are required (or --table)")
        row = compare(a.a, a.b, a.name or f"{a.a[0]} vs {a.b[0]}", a.paired_prunings, a.n_boot)
        print(json.dumps({k: row[k] for k in ("name", "a_what", "b_what")}))
    print(write_table())


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
