"""Prune with llm-compressor's own SparseGPT or Wanda (`oneshot`) on maskopt's calibration token ids; runs in the
peers' environment (bench/peers/README.md), never in maskopt's. Writes a plain Hugging Face folder (dense storage,
zeros where pruned) and OUT/peer_run.json (time, memory, versions, the modifier's arguments).

    ~/.cache/maskopt/peers-venv/bin/python bench/peers/llmcompressor_prune.py --model DIR --windows W.npy \
        --method sparsegpt --sparsity 0.5 --mask-structure 0:0 --out OUT
"""
from __future__ import annotations

import argparse
import hashlib
import json
import resource
import shutil
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="HF folder of the dense model (float32)")
    ap.add_argument("--windows", required=True, help=".npy of calibration token ids (nsamples × seqlen)")
    ap.add_argument("--method", required=True, choices=["sparsegpt", "wanda"])
    ap.add_argument("--sparsity", type=float, required=True)
    ap.add_argument("--mask-structure", default="0:0", help="'0:0' unstructured (llm-compressor's default) or 'N:M'")
    ap.add_argument("--out", required=True)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()

    import numpy as np
    import torch

    torch.set_num_threads(a.threads)
    import llmcompressor
    import transformers
    from datasets import Dataset
    from llmcompressor import oneshot
    from llmcompressor.modifiers.pruning import SparseGPTModifier, WandaPruningModifier
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    ids = np.load(a.windows)
    n, seqlen = ids.shape
    model = AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(a.model)
    ds = Dataset.from_dict({"input_ids": ids.tolist(), "attention_mask": np.ones_like(ids).tolist()})
    kwargs = dict(sparsity=a.sparsity, mask_structure=a.mask_structure, targets=["Linear"], ignore=["re:.*lm_head"])
    modifier = SparseGPTModifier(**kwargs) if a.method == "sparsegpt" else WandaPruningModifier(**kwargs)
    t = time.time()
    oneshot(model=model, tokenizer=tok, dataset=ds, recipe=[modifier], num_calibration_samples=n,
            max_seq_length=seqlen, shuffle_calibration_samples=False)
    seconds = time.time() - t
    # a plain folder: the dense model's config and tokenizer files, the pruned weights (no compression config)
    out = Path(a.out)
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(a.model, out, ignore=shutil.ignore_patterns("*.safetensors", "*.bin", "*.gguf", "*.index.json"))
    sd = {k: v.detach().to(torch.float32).contiguous().clone() for k, v in model.state_dict().items()}
    if getattr(model.config, "tie_word_embeddings", False):
        sd.pop("lm_head.weight", None)
    save_file(sd, str(out / "model.safetensors"), metadata={"format": "pt"})
    run = {"peer": f"llm-compressor {a.method}", "tool": "llmcompressor", "tool_version": llmcompressor.__version__,
           "torch": torch.__version__, "transformers": transformers.__version__,
           "modifier": type(modifier).__name__, "modifier_args": {**kwargs, **{k: getattr(modifier, k) for k in
                                                                            ("block_size", "dampening_frac")
                                                                            if hasattr(modifier, k)}},
           "pattern": "unstructured" if a.mask_structure == "0:0" else a.mask_structure,
           "prune_seconds": seconds, "prune_threads": a.threads,
           "prune_peak_memory_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
           "windows": str(a.windows), "windows_sha256": hashlib.sha256(ids.astype(np.int64).tobytes()).hexdigest(),
           "calibration": f"{n}x{seqlen}"}
    (out / "peer_run.json").write_text(json.dumps(run, indent=2, default=str))
    print(json.dumps(run, default=str))


if __name__ == "__main__":
    main()
