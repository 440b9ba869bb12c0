"""Benchmark (not a test): where the certified gap lives — root bounds against the optimum and the SDP bounds.

Per row of a pruning problem (50% per row): min_z zᵀQz over z ∈ {0,1}^d with Σz = p (z = pruned), Q = D_w G D_w.
Two kinds of instances, both from real layers (G = Σ x xᵀ of the dense model on calibration text, bench/_layers.py):

* **sub-problems** (``--dims``): one row of a layer, d of its inputs chosen at random, G restricted to them; the
  optimum is proven by the package's branch-and-bound (SCIP checks it on d ≤ 40 when ``--scip``);
* **full rows** (``--full-rows``): rows of a layer at full width (d = 576 on SmolLM2); the optimum is unknown, the
  reference is the best mask found (1-swap descent from the row's Wanda-like start, then B&B with a time limit).

Bounds compared (each a valid lower bound; the SDP ones are solved by an off-the-shelf conic solver, cvxpy with
Clarabel (d ≤ 64) or SCS (full rows), used here as an oracle only — not a package dependency):
``jacobi`` (the default root bound of maskopt certify), ``rowwise`` (the package's per-row optimised diagonal
shift), ``sdp-diag`` (Shor SDP with X_jj = z_j: the best diagonal shift), ``sdp-card`` (+ Σ_j X_ij = p z_i, the
cardinality products), ``sdp-rlt`` (+ RLT: 0 ≤ X_ij ≤ z_i, X_ij ≥ z_i + z_j − 1), and the package's new bounds
(see maskopt/certify/). Gap = (reference − LB) / reference.

    .venv/bin/python bench/certify_gap.py --model smollm --dims 32,48,64 --per-layer 2 [--full-rows 2] [--scip]
    .venv/bin/python bench/certify_gap.py --table
Rows are appended to bench/results/certify_gap.jsonl as they finish; --table writes certify_gap.md.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

from _layers import layers as layer_data  # noqa: E402
from common import RESULTS, SHARED, model_path  # noqa: E402
from maskopt.certify.bounds import relaxation_bound  # noqa: E402
from maskopt.solve.bnb.lmo import MaskLMO  # noqa: E402
from maskopt.solve.bnb.mask import solve_row  # noqa: E402
from maskopt.solve.bnb.tree import BnBConfig  # noqa: E402
from maskopt.solve.problem import LayerProblem  # noqa: E402

JSONL = RESULTS / "certify_gap.jsonl"
CALIB_V2 = Path(os.path.expanduser("~/.cache/maskopt/protocol-v2/wikitext2-valid-calib.txt"))
LAYERS = ("self_attn.q_proj", "self_attn.o_proj", "mlp.gate_proj", "mlp.down_proj")


def sdp_bound(Q: np.ndarray, p: int, card: bool, rlt: bool, solver: str = "CLARABEL", **kw) -> tuple[float, float]:
    """Shor SDP: min ⟨Q, X⟩ over [1 zᵀ; z X] ⪰ 0, diag X = z, Σz = p, z ∈ [0,1] (+ cardinality products, + RLT)."""
    import cvxpy as cp

    d = Q.shape[0]
    scale = float(np.abs(np.diag(Q)).max()) or 1.0
    Y = cp.Variable((d + 1, d + 1), symmetric=True)
    z, X = Y[0, 1:], Y[1:, 1:]
    cons = [Y >> 0, Y[0, 0] == 1, cp.diag(X) == z, cp.sum(z) == p, z >= 0, z <= 1]
    if card:
        cons.append(cp.sum(X, axis=1) == p * z)
    if rlt:
        Z1 = cp.reshape(z, (d, 1), order="F") @ np.ones((1, d))
        cons += [X >= 0, X <= Z1, X >= Z1 + Z1.T - 1]
    prob = cp.Problem(cp.Minimize(cp.trace((Q / scale) @ X)), cons)
    t = time.perf_counter()
    prob.solve(solver=solver, **kw)
    return float(prob.value) * scale, time.perf_counter() - t


def package_bound(w: np.ndarray, G: np.ndarray, shift: str, **kw) -> float:
    p = LayerProblem(torch.from_numpy(w)[None, :], torch.from_numpy(G), "per_row", 0.5)
    b, _ = relaxation_bound(p, shift=shift, dtype=torch.float64, iterations=3000, tol=1e-6, **kw)
    return float(b.clamp_min(0).sum())


def _opt(w: np.ndarray, G: np.ndarray, p: int, **kw) -> float:
    from maskopt.certify.shift import optimise_shift  # noqa: PLC0415

    prob = LayerProblem(torch.from_numpy(w)[None, :], torch.from_numpy(G), "per_row", 0.5)
    b, *_ = optimise_shift(prob, dtype=torch.float64, iterations=3000, tol=1e-6, **kw)
    return float(b.clamp_min(0).sum())


def new_bounds() -> dict[str, Callable[[np.ndarray, np.ndarray, int], float]]:
    """The package's new bounds (maskopt.certify.shift): name → (w, G, p) ↦ LB of the row alone.

    ``opt``: the default of maskopt certify (inverse-diagonal start, 2 shift rounds) on the row alone;
    ``opt-deep``: 12 rounds of 200 iterations, ≈ the best diagonal shift of the row (compare sdp-diag);
    ``block4`` / ``block8`` / ``bjacobi8``: the block-diagonal splitting bound (bench/_block_bound.py) with blocks of
    4 or 8 inputs, Schur-complement or block-Jacobi blocks, 300 lifted Frank-Wolfe iterations."""
    from _block_bound import block_bound  # noqa: PLC0415

    return {"opt": lambda w, G, p: _opt(w, G, p, rounds=2),
            "opt-deep": lambda w, G, p: _opt(w, G, p, rounds=12, round_iterations=200),
            "block4": lambda w, G, p: block_bound(w, G, p, 4, "schur"),
            "block8": lambda w, G, p: block_bound(w, G, p, 8, "schur"),
            "bjacobi8": lambda w, G, p: block_bound(w, G, p, 8, "jacobi")}


def bounds_for(w: np.ndarray, G: np.ndarray, p: int, full: bool, skip: set[str], layer_shift=None,
               full_sdp: bool = False) -> dict[str, dict]:
    Q = w[:, None] * G * w[None, :]
    res: dict[str, dict] = {}

    def run(name: str, fn: Callable[[], float]) -> None:
        if name in skip:
            return
        t = time.perf_counter()
        try:
            v = fn()
            res[name] = {"lb": float(v), "s": time.perf_counter() - t}
        except Exception as e:  # an oracle failing is a row of the table, not a crash
            res[name] = {"lb": None, "s": time.perf_counter() - t, "error": repr(e)[:200]}

    run("jacobi", lambda: package_bound(w, G, "jacobi"))
    run("layer", lambda: package_bound(w, G, "layer"))
    if len(w) <= 64:
        run("rowwise", lambda: package_bound(w, G, "rowwise"))
    for name, fn in new_bounds().items():
        run(name, lambda fn=fn: fn(w, G, p))
    if full:
        if layer_shift is not None:  # the shift a whole-layer certificate uses, on this row
            run("opt-layer", lambda: layer_shift(w, G))
        if full_sdp:
            kw = dict(solver="SCS", eps_abs=1e-6, eps_rel=1e-6, max_iters=5000)
            run("sdp-diag", lambda: sdp_bound(Q, p, False, False, **kw)[0])
    else:
        run("sdp-diag", lambda: sdp_bound(Q, p, False, False)[0])
        run("sdp-card", lambda: sdp_bound(Q, p, True, False)[0])
        run("sdp-rlt", lambda: sdp_bound(Q, p, True, True)[0])
    return res


def reference(w: np.ndarray, G: np.ndarray, p: int, time_limit: float, scip: bool) -> dict:
    d = len(w)
    lmo = MaskLMO.for_pattern(d, "per_row", d - p)
    r = solve_row(w, G, lmo, config=BnBConfig(time_limit=time_limit))
    out = {"opt": r.error, "opt_status": r.status, "opt_bound": r.lower_bound, "bnb_s": r.time, "nodes": r.nodes}
    if scip and d <= 40:
        from maskopt.testing import scip_row  # noqa: PLC0415

        s = scip_row(w, G, "per_row", d - p, time_limit=120.0)
        out.update(scip_value=s["value"], scip_status=s["status"], scip_bound=s["bound"])
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm", choices=["smollm", "tiny"])
    ap.add_argument("--blocks", default="0,15,29")
    ap.add_argument("--layers", default=",".join(LAYERS))
    ap.add_argument("--dims", default="32,48,64")
    ap.add_argument("--per-layer", type=int, default=1, help="sub-problems per (layer, d)")
    ap.add_argument("--full-rows", type=int, default=0, help="full-width rows per layer")
    ap.add_argument("--bnb-limit", type=float, default=300.0)
    ap.add_argument("--scip", action="store_true")
    ap.add_argument("--full-sdp", action="store_true", help="also the Shor SDP (SCS) on full rows (minutes per row)")
    ap.add_argument("--skip", default="", help="bounds not to run (comma list)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tag", default="")
    ap.add_argument("--table", action="store_true")
    ap.add_argument("--add", action="store_true", help="compute the bounds missing from the rows already in the file")
    ap.add_argument("--full-rlt", nargs=2, metavar=("LAYER", "ROWS"), default=None,
                    help="Shor SDP + cardinality (+ RLT) by SCS on whole rows of a tiny-model layer (an hour per row)")
    args = ap.parse_args()
    if args.table:
        write_table()
        return
    if args.add:
        add_bounds(set(filter(None, args.skip.split(","))))
        return
    if args.full_rlt:
        full_rlt(args.full_rlt[0], [int(r) for r in args.full_rlt[1].split(",")])
        return
    torch.set_num_threads(1)
    blocks = [int(b) for b in args.blocks.split(",")]
    if args.model == "smollm":
        data = layer_data(model_path("smollm"), CALIB_V2, [0, 7, 15, 22, 29] if set(blocks) <= {0, 7, 15, 22, 29} else blocks)
    else:
        data = layer_data(SHARED / "models" / "maskopt-tiny-llama", SHARED / "data" / "english-calib" / "calib.txt", blocks)
    rng = np.random.default_rng(args.seed)
    skip = set(filter(None, args.skip.split(",")))
    RESULTS.mkdir(parents=True, exist_ok=True)
    for b in blocks:
        for lname in args.layers.split(","):
            name = f"model.layers.{b}.{lname}"
            W, G = (t.to(torch.float64).numpy() for t in data[name])
            jobs = [(d, k) for d in ([int(x) for x in args.dims.split(",") if x] ) for k in range(args.per_layer)]
            jobs += [(W.shape[1], k) for k in range(args.full_rows)]
            layer_fn = None
            if args.full_rows:
                from maskopt.certify.bounds import _relaxed  # noqa: PLC0415
                from maskopt.certify.shift import optimise_shift  # noqa: PLC0415

                _, S, *_ = optimise_shift(LayerProblem(torch.from_numpy(W).float(), torch.from_numpy(G).float(), "per_row", 0.5))

                def layer_fn(w, g, S=S):  # noqa: ANN001
                    pr = LayerProblem(torch.from_numpy(w)[None, :], torch.from_numpy(g), "per_row", 0.5)
                    q = pr.W * pr.W * pr.G.diagonal()[None, :]
                    b, _, _ = _relaxed(pr, S[0][None, :] * q, 3000, 10, None, tol=1e-6)
                    return float(b.clamp_min(0).sum())
            for d, k in jobs:
                i = int(rng.integers(W.shape[0]))
                full = d == W.shape[1]
                cols = np.arange(d) if full else np.sort(rng.choice(W.shape[1], d, replace=False))
                w, g = W[i, cols], G[np.ix_(cols, cols)]
                p = d - d // 2
                rec = {"model": args.model, "layer": name, "row": i, "d": d, "full": full, "p": p, "tag": args.tag,
                       "cols": None if full else cols.tolist()}
                rec.update(reference(w, g, p, args.bnb_limit if not full else 60.0, args.scip and not full))
                rec["bounds"] = bounds_for(w, g, p, full, skip, layer_fn if full else None, args.full_sdp)
                with JSONL.open("a") as f:
                    f.write(json.dumps(rec) + "\n")
                print(json.dumps({k: v for k, v in rec.items() if k != "bounds"}),
                      {n: (None if v["lb"] is None else round((rec["opt"] - v["lb"]) / rec["opt"], 4)) for n, v in rec["bounds"].items()},
                      flush=True)


def instance(rec: dict) -> tuple[np.ndarray, np.ndarray]:
    """(w, G) of a row of the file, rebuilt from its layer, row and inputs."""
    if rec["model"] == "smollm":
        data = layer_data(model_path("smollm"), CALIB_V2, [0, 7, 15, 22, 29])
    else:
        data = layer_data(SHARED / "models" / "maskopt-tiny-llama", SHARED / "data" / "english-calib" / "calib.txt",
                          [int(rec["layer"].split(".")[2])])
    W, G = (t.to(torch.float64).numpy() for t in data[rec["layer"]])
    cols = np.arange(W.shape[1]) if rec["cols"] is None else np.asarray(rec["cols"])
    return W[rec["row"], cols], G[np.ix_(cols, cols)]


def _layer_shift_fn(rec: dict, cache: dict):
    """(w, G) ↦ LB of a full row under the shift a whole-layer certificate uses (maskopt certify's default)."""
    from maskopt.certify.bounds import _relaxed  # noqa: PLC0415
    from maskopt.certify.shift import optimise_shift  # noqa: PLC0415

    if rec["layer"] not in cache:
        if rec["model"] == "smollm":
            data = layer_data(model_path("smollm"), CALIB_V2, [0, 7, 15, 22, 29])
        else:
            data = layer_data(SHARED / "models" / "maskopt-tiny-llama", SHARED / "data" / "english-calib" / "calib.txt",
                              [int(rec["layer"].split(".")[2])])
        W, G = data[rec["layer"]]
        _, S, *_ = optimise_shift(LayerProblem(W.float(), G.float(), "per_row", 0.5))
        cache[rec["layer"]] = S[0]
    S0 = cache[rec["layer"]]

    def fn(w, g, p):  # noqa: ANN001
        pr = LayerProblem(torch.from_numpy(w)[None, :], torch.from_numpy(g), "per_row", 0.5)
        q = pr.W * pr.W * pr.G.diagonal()[None, :]
        b, _, _ = _relaxed(pr, S0[None, :] * q, 3000, 10, None, tol=1e-6)
        return float(b.clamp_min(0).sum())
    return fn


def full_sdp_references() -> None:
    """For the whole rows of certify_gap_full_sdp.jsonl: the best mask found (B&B, 60 s, from the row's own start
    and 1-swaps) and the package's bounds on that row (Jacobi, the layer's default shift, the shift of the row alone)."""
    if not FULL_SDP.exists():
        return
    recs = [json.loads(line) for line in FULL_SDP.read_text().splitlines() if line.strip()]
    cache: dict = {}
    done: dict = {}
    for rec in recs:
        key = (rec["layer"], rec["row"])
        if "reference" in rec:
            done[key] = {k: rec[k] for k in ("reference", "reference_status", "package")}
            continue
        if key not in done:
            full = {"model": "tiny", "layer": rec["layer"], "row": rec["row"], "cols": None}
            data = layer_data(SHARED / "models" / "maskopt-tiny-llama", SHARED / "data" / "english-calib" / "calib.txt",
                              [0, 1, 2, 3, 4, 5], nsamples=128, seqlen=512)
            W, G = (t.to(torch.float64).numpy() for t in data[rec["layer"]])
            w = W[rec["row"]]
            p = len(w) - len(w) // 2
            ref = reference(w, G, p, 60.0, False)
            cache.setdefault(rec["layer"], None)
            S = None
            from maskopt.certify.shift import optimise_shift  # noqa: PLC0415
            from maskopt.certify.bounds import _relaxed  # noqa: PLC0415

            _, S, *_ = optimise_shift(LayerProblem(torch.from_numpy(W).float(), torch.from_numpy(G).float(), "per_row", 0.5))
            pr = LayerProblem(torch.from_numpy(w)[None, :], torch.from_numpy(G), "per_row", 0.5)
            q = pr.W * pr.W * pr.G.diagonal()[None, :]
            lay, _, _ = _relaxed(pr, S[0][None, :] * q, 3000, 10, None, tol=1e-6)
            done[key] = {"reference": ref["opt"], "reference_status": ref["opt_status"],
                         "package": {"jacobi": package_bound(w, G, "jacobi"), "opt-layer": float(lay.clamp_min(0)),
                                     "opt": _opt(w, G, p, rounds=2), "layer": package_bound(w, G, "layer")}}
            full.clear()
        rec.update(done[key])
    FULL_SDP.write_text("".join(json.dumps(r) + "\n" for r in recs))


def add_bounds(skip: set[str]) -> None:
    """Compute the bounds a row of the file lacks (new bounds of the package; the SDP ones are never redone)."""
    torch.set_num_threads(1)
    full_sdp_references()
    recs = [json.loads(line) for line in JSONL.read_text().splitlines() if line.strip()]
    cache: dict = {}
    for rec in recs:
        w, g = instance(rec)
        todo = dict(new_bounds())
        if rec["full"]:
            todo["opt-layer"] = None
        for name, fn in todo.items():
            if name in rec["bounds"] or name in skip:
                continue
            if fn is None:
                fn = _layer_shift_fn(rec, cache)
            t = time.perf_counter()
            rec["bounds"][name] = {"lb": float(fn(w, g, rec["p"])), "s": time.perf_counter() - t}
            print(rec["layer"], rec["row"], rec["d"], name, (rec["opt"] - rec["bounds"][name]["lb"]) / rec["opt"], flush=True)
        tmp = JSONL.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in recs))
        tmp.replace(JSONL)


FULL_SDP = RESULTS / "certify_gap_full_sdp.jsonl"


def full_rlt(layer: str, rows: list[int]) -> None:
    """Whole rows of a tiny-model layer: Shor SDP with the cardinality products, then with all RLT cuts (SCS)."""
    import cvxpy as cp  # noqa: PLC0415

    torch.set_num_threads(1)
    data = layer_data(SHARED / "models" / "maskopt-tiny-llama", SHARED / "data" / "english-calib" / "calib.txt",
                      [0, 1, 2, 3, 4, 5], nsamples=128, seqlen=512)
    W, G = (t.to(torch.float64).numpy() for t in data[layer])
    for i in rows:
        w = W[i]
        d = len(w)
        p = d - d // 2
        Q = w[:, None] * G * w[None, :]
        sc = float(np.diag(Q).max())
        for rlt in (False, True):
            Y = cp.Variable((d + 1, d + 1), symmetric=True)
            z, X = Y[0, 1:], Y[1:, 1:]
            cons = [Y >> 0, Y[0, 0] == 1, cp.diag(X) == z, cp.sum(z) == p, z >= 0, z <= 1, cp.sum(X, axis=1) == p * z]
            if rlt:
                Z1 = cp.reshape(z, (d, 1), order="F") @ np.ones((1, d))
                cons += [X >= 0, X <= Z1, X >= Z1 + Z1.T - 1]
            prob = cp.Problem(cp.Minimize(cp.trace((Q / sc) @ X)), cons)
            t = time.time()
            prob.solve(solver="SCS", eps_abs=1e-5, eps_rel=1e-5, max_iters=20000)
            rec = {"layer": layer, "row": i, "d": d, "rlt": rlt, "value": prob.value * sc, "status": prob.status,
                   "s": time.time() - t}
            print(json.dumps(rec), flush=True)
            with FULL_SDP.open("a") as f:
                f.write(json.dumps(rec) + "\n")


def write_table() -> None:
    recs = [json.loads(line) for line in JSONL.read_text().splitlines() if line.strip()]
    names: list[str] = []
    for r in recs:
        for n in r["bounds"]:
            if n not in names:
                names.append(n)
    lines = ["# Where the certified gap lives: root bounds vs the optimum (50% per row)", "",
             "Gap = (reference − LB)/reference per row; reference = the proven optimum (sub-problems, B&B; "
             "`status` says if a time limit stopped it) or the best mask found (full rows). Mean over rows; "
             "seconds = mean wall seconds per row on the shared 2-core machine (one thread).",
             "Command: `.venv/bin/python bench/certify_gap.py ...` (see the script), table: `--table`.", ""]
    groups: dict[tuple, list[dict]] = {}
    for r in recs:
        key = (r["model"], "full" if r["full"] else "sub", r["d"])
        groups.setdefault(key, []).append(r)
    lines += ["| model | instances | d | rows | optimum proven | " + " | ".join(f"{n} gap" for n in names) + " |",
              "|---|---|---:|---:|---:|" + "---:|" * len(names)]
    for (model, kind, d), rs in sorted(groups.items()):
        cells = []
        for n in names:
            g = [(r["opt"] - r["bounds"][n]["lb"]) / r["opt"] for r in rs if n in r["bounds"] and r["bounds"][n]["lb"] is not None]
            t = [r["bounds"][n]["s"] for r in rs if n in r["bounds"] and r["bounds"][n]["lb"] is not None]
            cells.append("—" if not g else f"{100 * np.mean(g):.1f}% ({np.mean(t):.2g} s)")
        proven = sum(r["opt_status"] == "optimal" for r in rs)
        lines.append(f"| {model} | {kind} | {d} | {len(rs)} | {proven} | " + " | ".join(cells) + " |")
    lines += ["", "Per row:", "", "| model | layer | row | d | reference | status | " + " | ".join(names) + " |",
              "|---|---|---:|---:|---:|---|" + "---:|" * len(names)]
    for r in recs:
        cells = []
        for n in names:
            v = r["bounds"].get(n)
            cells.append("—" if v is None or v["lb"] is None else f"{100 * (r['opt'] - v['lb']) / r['opt']:.1f}%")
        lines.append(f"| {r['model']} | {r['layer'].replace('model.layers.', '')} | {r['row']} | {r['d']} | {r['opt']:.4g} | "
                     f"{r['opt_status']} | " + " | ".join(cells) + " |")
    if FULL_SDP.exists():
        fr = [json.loads(line) for line in FULL_SDP.read_text().splitlines() if line.strip()]
        lines += ["", "Whole rows of the tiny model (d = 256) with the Shor SDP solved by SCS (`--full-rlt LAYER ROWS`): "
                  "gap against the best mask found (B&B, 60 s); the RLT cuts alone cost about an hour of SCS per row.", "",
                  "| layer | row | best mask | jacobi | opt (layer's shift) | layer (row alone) | opt (row alone) | sdp-card | sdp-rlt |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for key in dict.fromkeys((r["layer"], r["row"]) for r in fr):
            rs = [r for r in fr if (r["layer"], r["row"]) == key]
            ref = next((r.get("reference") for r in rs if r.get("reference")), None)
            if ref is None:
                continue
            pk = next(r["package"] for r in rs if "package" in r)
            g = lambda v: f"{100 * (ref - v) / ref:.1f}%"  # noqa: E731
            sdp = {bool(r["rlt"]): r["value"] for r in rs}
            lines.append(f"| {key[0].replace('model.layers.', '')} | {key[1]} | {ref:.4g} | {g(pk['jacobi'])} | "
                         f"{g(pk['opt-layer'])} | {g(pk['layer'])} | {g(pk['opt'])} | "
                         f"{g(sdp[False]) if False in sdp else '—'} | {g(sdp[True]) if True in sdp else '—'} |")
    (RESULTS / "certify_gap.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
