"""Evaluation protocol v2 of the SmolLM2 scoreboard (issue 20): one place for the data splits, the calibration
windows and the scores, shared by `bench/smollm.py` and the peer runners in `bench/peers/`.

* **Calibration / retraining text**: the first 90% of `../shared/data/wikitext-2/valid.txt` (cut at the first
  line break at or after 90% of its characters). **Tuning text**: the rest, never sampled; every choice of a
  learning rate, epoch count, α or default is made on it. Both are written at run time into
  `$MASKOPT_CACHE/protocol-v2/` (default `~/.cache/maskopt/protocol-v2/`), never committed.
* **Calibration windows**: maskopt's own sampler (`maskopt.data.make_windows`, seed 0) on the calibration text;
  `export_windows` writes the same token ids to a `.npy` file for the peers.
* **Scores** (`evaluate`): perplexity on WikiText-2 raw `test.txt` (the first 128 windows of 512 tokens, or the
  whole test set), on `../shared/data/english-heldout/test.txt` (out of domain: NLTK corpora, not WikiText) and on
  the tuning text, each with a percentile-bootstrap 95% interval over windows and the per-window NLL sums (so two
  rows can be compared pairwise, `compare`); zero-shot accuracy on the seven tasks of `../shared/data/zeroshot/`
  through lm-eval (acc, acc_norm, their means with standard errors; `limit` recorded).

    .venv/bin/python bench/protocol.py splits                    # write the two texts, print their paths
    .venv/bin/python bench/protocol.py windows --out W.npy       # the calibration token ids for a peer
    .venv/bin/python bench/protocol.py score FOLDER --json OUT.json [--zeroshot-limit 500]   # any HF folder
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
VALID = SHARED / "data" / "wikitext-2" / "valid.txt"
WIKITEXT_TEST = SHARED / "data" / "wikitext-2-raw" / "test.txt"
HELDOUT = SHARED / "data" / "english-heldout" / "test.txt"
VERSION = "v2"
TUNE_SHARE = 0.10
EVAL_SEQLEN = 512
WIKITEXT_WINDOWS = 128  # the first 128 windows of 512 tokens (0: the whole test set, 595 windows)
HELDOUT_WINDOWS = 128  # of 354
CALIB_NSAMPLES, CALIB_SEQLEN, CALIB_SEED = 128, 256, 0
N_BOOT = 2000


def split_text(text: str, tune_share: float = TUNE_SHARE) -> tuple[str, str]:
    """(calibration, tuning): the text cut at the first line break at or after (1 − tune_share) of its characters;
    calibration + tuning == text."""
    if not 0 < tune_share < 1:
        raise ValueError(f"tune_share must be in (0, 1), got {tune_share}")
    at = int(len(text) * (1 - tune_share))
    nl = text.find("\n", at)
    if nl < 0 or nl + 1 >= len(text):
        raise ValueError("the text has no line break after the cut point: nothing would be left for tuning")
    return text[: nl + 1], text[nl + 1 :]


def cache_root() -> Path:
    from maskopt.perplexity import cache_dir  # noqa: PLC0415

    return cache_dir() / f"protocol-{VERSION}"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_splits(source: Path = VALID, folder: Path | None = None, tune_share: float = TUNE_SHARE) -> dict:
    """Write the calibration and tuning texts of ``source`` into ``folder`` (rewritten only when different);
    return their paths, the cut (characters) and SHA-256 of the source and both parts."""
    from maskopt.data import read_text_file  # noqa: PLC0415

    folder = Path(folder) if folder is not None else cache_root()
    folder.mkdir(parents=True, exist_ok=True)
    text = read_text_file(Path(source))
    calib, tune = split_text(text, tune_share)
    out = {"source": str(source), "source_sha256": _sha(Path(source).read_bytes()), "cut_chars": len(calib),
           "total_chars": len(text), "tune_share": tune_share}
    for name, part in (("calib", calib), ("tune", tune)):
        path = folder / f"wikitext2-valid-{name}.txt"
        data = part.encode()
        if not path.is_file() or path.read_bytes() != data:
            tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
            tmp.write_bytes(data)
            os.replace(tmp, path)
        out[name] = str(path)
        out[f"{name}_sha256"] = _sha(data)
    return out


def calibration_windows(tokenizer, model, nsamples: int = CALIB_NSAMPLES, seqlen: int = CALIB_SEQLEN,
                        seed: int = CALIB_SEED, splits: dict | None = None):
    """The calibration windows maskopt prunes with under protocol v2 (the same call the prune job makes)."""
    from maskopt.data import make_windows  # noqa: PLC0415

    splits = splits or write_splits()
    return make_windows([splits["calib"]], tokenizer, model, nsamples, seqlen, seed)


def export_windows(path: str | Path, model_dir: str | Path, nsamples: int = CALIB_NSAMPLES,
                   seqlen: int = CALIB_SEQLEN, seed: int = CALIB_SEED) -> dict:
    """Write the calibration token ids (int64, nsamples × seqlen) to ``path`` (.npy) and a provenance sidecar
    ``path.json``; a peer reads them instead of sampling its own windows."""
    import numpy as np  # noqa: PLC0415

    from maskopt.model.loading import load_model  # noqa: PLC0415

    model, tok = load_model(model_dir, progress=False)
    splits = write_splits()
    w = calibration_windows(tok, model, nsamples, seqlen, seed, splits)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, w.numpy().astype(np.int64))
    meta = {"protocol": VERSION, "nsamples": nsamples, "seqlen": seqlen, "seed": seed, "model": str(model_dir),
            "calib": splits["calib"], "calib_sha256": splits["calib_sha256"],
            "ids_sha256": _sha(w.numpy().astype(np.int64).tobytes())}
    Path(str(path) + ".json").write_text(json.dumps(meta, indent=2))
    return meta


@dataclass
class EvalConfig:
    wikitext_windows: int = WIKITEXT_WINDOWS  # 0: the whole test set; −1: not scored
    heldout_windows: int = HELDOUT_WINDOWS  # 0: the whole text; −1: not scored
    tune: bool = True  # perplexity on the tuning text (all its windows)
    zeroshot: bool = True
    zeroshot_limit: int | None = None  # documents per task (None or 0: the whole validation sets)
    batch_size: int = 4
    n_boot: int = N_BOOT
    seed: int = 0

    def tag(self) -> str:
        """Short description of how much was evaluated, for tables: W128 H128 T Z500 (0 = whole)."""
        z = "Z–" if not self.zeroshot else f"Z{self.zeroshot_limit or 'all'}"
        w = "W–" if self.wikitext_windows < 0 else f"W{self.wikitext_windows or 'all'}"
        h = "H–" if self.heldout_windows < 0 else f"H{self.heldout_windows or 'all'}"
        return f"{w} {h}{' T' if self.tune else ''} {z}"


def score_text(model, tokenizer, text: str | Path, max_windows: int | None, cfg: EvalConfig,
               progress: bool = False) -> dict:
    """Perplexity of ``text`` on windows of 512 (the first ``max_windows``, 0/None: all), its bootstrap interval
    and the per-window NLL sums."""
    from maskopt.data import eval_windows, read_texts, tokenize  # noqa: PLC0415
    from maskopt.perplexity import bootstrap_perplexity, perplexity_from_nlls, window_nlls  # noqa: PLC0415

    t = time.time()
    ids = tokenize(tokenizer, read_texts(text))
    w = eval_windows(ids, EVAL_SEQLEN, max_windows or None)
    nll, tok = window_nlls(model, w, batch_size=cfg.batch_size, progress=progress, desc=Path(text).name)
    lo, hi = bootstrap_perplexity(nll, tok, n_boot=cfg.n_boot, seed=cfg.seed)
    return {"ppl": perplexity_from_nlls(nll, tok), "lo": lo, "hi": hi, "windows": int(w.shape[0]),
            "tokens": int(tok.sum()), "seqlen": EVAL_SEQLEN, "nll": [round(float(x), 4) for x in nll],
            "seconds": time.time() - t}


def score_zeroshot(model, tokenizer, cfg: EvalConfig) -> dict:
    from maskopt.zeroshot import PAPER_ALIAS, mean_accuracy, zero_shot  # noqa: PLC0415

    t = time.time()
    res = zero_shot(model, tokenizer, [PAPER_ALIAS], limit=cfg.zeroshot_limit or None, batch_size=8,
                    seed=cfg.seed)
    return {"tasks": res, **mean_accuracy(res), "limit": cfg.zeroshot_limit or None, "seconds": time.time() - t}


def evaluate(model, tokenizer, cfg: EvalConfig | None = None, progress: bool = False, log=None) -> dict:
    """All protocol-v2 scores of an in-memory model: {"wikitext": …, "heldout": …, "tune": …, "zeroshot": …}."""
    cfg = cfg or EvalConfig()
    log = log or (lambda m: print(m, file=sys.stderr, flush=True))
    model.eval()
    out: dict = {"protocol": VERSION, "eval": asdict(cfg), "eval_tag": cfg.tag()}
    texts = [(name, path, n) for name, path, n in (("wikitext", WIKITEXT_TEST, cfg.wikitext_windows),
                                                   ("heldout", HELDOUT, cfg.heldout_windows)) if n >= 0]  # −1: skipped
    if cfg.tune:
        texts.append(("tune", Path(write_splits()["tune"]), 0))
    for name, path, n in texts:
        out[name] = score_text(model, tokenizer, path, n, cfg, progress)
        r = out[name]
        log(f"{name}: ppl {r['ppl']:.2f} [{r['lo']:.2f}, {r['hi']:.2f}] on {r['windows']} windows ({r['seconds']:.0f} s)")
    if cfg.zeroshot:
        out["zeroshot"] = score_zeroshot(model, tokenizer, cfg)
        z = out["zeroshot"]
        log(f"zero-shot: mean acc {z['mean_acc']:.4f}, mean acc_norm {z['mean_acc_norm']:.4f} "
            f"(limit {z['limit']}, {z['seconds']:.0f} s)")
    return out


@dataclass
class ProtocolOptions:
    eval: EvalConfig = field(default_factory=EvalConfig)


def protocol_stage(cfg: EvalConfig):
    """A stage for maskopt's job runner that scores the model as it is now; the scores land in ``stage.result``."""
    from maskopt.stages import Stage  # noqa: PLC0415

    class ProtocolStage(Stage):
        name = "protocol-v2-eval"
        Options = ProtocolOptions

        def run(self, ctx) -> None:
            self.result = evaluate(ctx.model, ctx.tokenizer, self.options.eval, progress=False, log=ctx.log)
            if ctx.offload:
                ctx.model.to("cpu")

    return ProtocolStage(ProtocolOptions(cfg))


def same_nll(x: list[float], y: list[float], rtol: float = 1e-5) -> bool:
    """Two scorings of one model: the NLL of every window both lists hold agrees within ``rtol``."""
    return all(abs(p - q) <= rtol * max(abs(p), abs(q), 1.0) for p, q in zip(x, y))


def compare(row_a: dict, row_b: dict, text: str = "wikitext", n_boot: int = N_BOOT, seed: int = 0) -> dict:
    """Paired bootstrap of two scored rows on ``text`` over the windows both scored (the first n of the same
    text: rows with 128 and with all windows share their first 128)."""
    from maskopt.perplexity import paired_bootstrap  # noqa: PLC0415

    a, b = row_a[text], row_b[text]
    n = min(len(a["nll"]), len(b["nll"]))
    if a.get("seqlen") != b.get("seqlen"):
        raise ValueError("rows were scored on windows of different lengths")
    tokens = [float(a["seqlen"] - 1)] * n
    return paired_bootstrap(a["nll"][:n], b["nll"][:n], tokens, n_boot=n_boot, seed=seed)


def score_folder(folder: str | Path, cfg: EvalConfig) -> dict:
    """Load an HF folder (a pruned model of any tool) and score it; the weights' sparsity is recorded."""
    import torch  # noqa: PLC0415

    from maskopt.model.adapters import get_adapter  # noqa: PLC0415
    from maskopt.model.loading import load_model  # noqa: PLC0415

    model, tok = load_model(folder, progress=False)
    adapter = get_adapter(model)
    zeros = total = 0
    for lin in adapter.named_linears(model).values():
        w = adapter.get_weight(lin)
        zeros += int((w == 0).sum())
        total += w.numel()
    with torch.no_grad():
        res = evaluate(model, tok, cfg)
    res["sparsity"] = zeros / total if total else 0.0
    return res


def main() -> None:
    import argparse  # noqa: PLC0415

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("splits", help="write the calibration and tuning texts into the cache, print their paths")
    w = sub.add_parser("windows", help="write the calibration token ids (.npy) for a peer")
    w.add_argument("--out", required=True)
    w.add_argument("--model", default=None, help="model folder (default: SmolLM2, see bench/common.py)")
    w.add_argument("--nsamples", type=int, default=CALIB_NSAMPLES)
    w.add_argument("--seqlen", type=int, default=CALIB_SEQLEN)
    s = sub.add_parser("score", help="score an HF folder under protocol v2")
    s.add_argument("folder")
    s.add_argument("--json", required=True, help="where to write the scores")
    s.add_argument("--wikitext-windows", type=int, default=WIKITEXT_WINDOWS, help="0: the whole test set")
    s.add_argument("--heldout-windows", type=int, default=HELDOUT_WINDOWS)
    s.add_argument("--zeroshot-limit", type=int, default=None, help="documents per task (default: all)")
    s.add_argument("--no-zeroshot", action="store_true")
    s.add_argument("--threads", type=int, default=1)
    s.add_argument("--extra", default=None, help="a JSON file whose keys are added to the output (the peer's run)")
    a = ap.parse_args()
    if a.cmd == "splits":
        print(json.dumps(write_splits(), indent=2))
    elif a.cmd == "windows":
        from common import model_path  # noqa: PLC0415

        print(json.dumps(export_windows(a.out, a.model or model_path("smollm"), a.nsamples, a.seqlen), indent=2))
    else:
        import torch  # noqa: PLC0415

        torch.set_num_threads(a.threads)
        cfg = EvalConfig(a.wikitext_windows, a.heldout_windows, zeroshot=not a.no_zeroshot,
                         zeroshot_limit=a.zeroshot_limit)
        t = time.time()
        res = score_folder(a.folder, cfg)
        res.update(folder=str(a.folder), eval_seconds=time.time() - t, threads=a.threads)
        if a.extra:
            res = {**json.loads(Path(a.extra).read_text()), **res}
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(res))
        print(json.dumps({k: v for k, v in res.items() if k not in ("wikitext", "heldout", "tune")}
                         | {k: res[k]["ppl"] for k in ("wikitext", "heldout", "tune") if k in res}))


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
