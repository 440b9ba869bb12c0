"""Which layers carry a pruned model's perplexity loss: apply its pruned layers one group at a time.

For a pruned folder P (a mask row's cache of `bench/smollm.py`) and its dense model D, each group g (attention
or MLP linears, a range of blocks, one linear kind) gives the model that is D except the layers of g, which are
P's. Its perplexity minus the dense one is the loss g causes alone; the sum over a partition next to the whole
model's loss shows how much comes from interaction (errors of early layers reaching later ones).
Same evaluation protocol as the scoreboard (WikiText-2 raw test, windows of 512, the first 32).

    .venv/bin/python bench/smollm_attribution.py ~/.cache/maskopt/bench-masks/smollm-sparseswaps_warm_start=sparsefw-50_-uniform-refityes-128x256
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from common import RESULTS, ROOT, model_path
from smollm import TEXT


def groups(n_blocks: int, names: list[str], attn: str) -> dict[str, set[tuple[int, str]]]:
    """Named sets of (block, linear name) to take from the pruned model; ``attn``: the adapter's attention path
    (the linears below it are the attention group, the others the MLP group)."""
    every = {(b, n) for b in range(n_blocks) for n in names}
    attention = {(b, n) for b, n in every if n.startswith(attn + ".")}
    third = n_blocks // 3
    out = {"all": every, "attention": attention, "mlp": every - attention,
           f"blocks 0–{third - 1}": {(b, n) for b, n in every if b < third},
           f"blocks {third}–{2 * third - 1}": {(b, n) for b, n in every if third <= b < 2 * third},
           f"blocks {2 * third}–{n_blocks - 1}": {(b, n) for b, n in every if b >= 2 * third},
           "block 0": {(b, n) for b, n in every if b == 0}}
    for n in names:
        out[n.split(".")[-1]] = {(b, m) for b, m in every if m == n}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("pruned", type=Path)
    ap.add_argument("--model", default="smollm")
    ap.add_argument("--eval-max-windows", type=int, default=32)
    ap.add_argument("--name", default="smollm_attribution")
    ap.add_argument("--only", nargs="*", help="group names to evaluate (default: every group; the whole model always)")
    a = ap.parse_args()
    import torch

    from maskopt.model.adapters import get_adapter
    from maskopt.model.loading import load_model
    from maskopt.perplexity import evaluate_texts

    pruned, tok = load_model(a.pruned, progress=False)
    dense, _ = load_model(model_path(a.model), progress=False)
    adapter = get_adapter(dense)
    names = adapter.linear_names()
    d_blocks, p_blocks = adapter.get_blocks(dense), adapter.get_blocks(pruned)
    original = {(b, n): adapter.get_weight(m).clone() for b, blk in enumerate(d_blocks)
                for n, m in adapter.linears(blk).items()}

    def ppl() -> float:
        return next(iter(evaluate_texts(dense, tok, [TEXT], seqlen=512, max_windows=a.eval_max_windows,
                                        progress=False).values()))

    out_path = RESULTS / f"{a.name}.json"
    res = json.loads(out_path.read_text()) if out_path.exists() else {}
    key = a.pruned.name
    rows = res.setdefault(key, {})
    if "dense" not in rows:
        rows["dense"] = ppl()
    for g, members in groups(len(d_blocks), names, adapter.attn).items():
        if g in rows or (a.only and g not in {*a.only, "all"}):  # "all" is the denominator of the shares
            continue
        t = time.time()
        with torch.no_grad():
            for b, n in members:
                adapter.set_weight(adapter.linears(d_blocks[b])[n], adapter.get_weight(adapter.linears(p_blocks[b])[n]))
            rows[g] = ppl()
            for b, n in members:
                adapter.set_weight(adapter.linears(d_blocks[b])[n], original[(b, n)])
        print(f"{g}: {rows[g]:.2f} ({time.time() - t:.0f} s)", flush=True)
        out_path.write_text(json.dumps(res, indent=2))
    d = rows["dense"]
    lines = [f"Perplexity loss by layer group (`bench/smollm_attribution.py`): the dense SmolLM2 with only the group's "
             f"layers taken from the pruned model; dense {d:.2f}.\n"]
    for k, r in res.items():
        lines += [f"\n**{k}**\n", "| pruned group | ppl | loss (ppl − dense) | share of the whole model's loss |",
                  "|---|---:|---:|---:|"]
        whole = r.get("all", float("nan")) - r["dense"]
        for g, v in r.items():
            if g != "dense":
                lines.append(f"| {g} | {v:.2f} | {v - r['dense']:.2f} | {(v - r['dense']) / whole:.2f} |")
    (RESULTS / f"{a.name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
