"""Every export format reloads to the logits of the pruned HF folder; compressed-tensors by its own decompressor."""
import json

import pytest
import torch
from conftest import VOCAB, tiny_tokenizer

from maskopt.export import available_formats, export_model, load_any, load_exported, read_info
from maskopt.io import save_model
from maskopt.model.loading import load_model
from maskopt.solve.patterns import Pattern


def pruned_llama(pattern: str, sparsity: float = 0.5, seed: int = 0, hidden: int = 320, inter: int = 528):
    """A random Llama whose linears (lm_head aside) are pruned by magnitude to ``pattern`` (tiles of 256 and
    a short last tile: 320 = 256 + 64, 528 = 2·256 + 16)."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=hidden, intermediate_size=inter, num_hidden_layers=1,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    model = AutoModelForCausalLM.from_config(cfg).eval()
    pat = Pattern.parse(pattern)
    with torch.no_grad():
        for name, mod in model.named_modules():
            if isinstance(mod, torch.nn.Linear) and name != "lm_head":
                W = mod.weight
                W.mul_(pat.topk_mask(W.abs(), pat.keep_per_group(*W.shape, sparsity)))
    return model


@pytest.fixture(scope="module")
def ids():
    return torch.randint(0, VOCAB, (2, 12), generator=torch.Generator().manual_seed(0))


def _reference(model, tmp_path, ids):
    folder = save_model(model, tiny_tokenizer(), tmp_path / "pruned")
    ref, _ = load_model(folder)
    with torch.no_grad():
        return ref(ids).logits


CASES = [("hf", "per_row", {}), ("cs256", "cs256", {}), ("cs256", "per_row", {"pad": True}),
         ("compressed-tensors", "per_row", {}), ("compressed-tensors", "2:4", {}),
         ("compressed-tensors", "2:4", {"layout": "bitmask"}), ("cs256", "2:4", {})]


@pytest.mark.parametrize("fmt,pattern,opts", CASES)
def test_export_reloads_to_the_same_logits(fmt, pattern, opts, tmp_path, ids):
    model = pruned_llama(pattern, 0.6 if pattern != "2:4" else 0.5)
    ref = _reference(model, tmp_path, ids)
    out = tmp_path / "export"
    info = export_model(model, tiny_tokenizer(), out, fmt, **opts)
    assert read_info(out)["format"] == fmt == info["format"]
    back = load_exported(out)
    with torch.no_grad():
        assert torch.equal(back(ids).logits, ref)
    again, tok = load_any(out)
    assert tok is not None and torch.equal(again.model.layers[0].mlp.down_proj.weight,
                                           model.model.layers[0].mlp.down_proj.weight)
    if fmt == "compressed-tensors":
        assert info["layout"] == ("2:4" if pattern == "2:4" and not opts else "bitmask")
    if fmt == "cs256":
        assert info["index_bits_per_kept"] < 9.0 and (info["padded_zeros"] > 0) == bool(opts.get("pad"))


def test_cs256_quantized_export_is_close_and_keeps_the_zeros(tmp_path, ids):
    model = pruned_llama("cs256", 0.5)
    ref = _reference(model, tmp_path, ids)
    export_model(model, tiny_tokenizer(), tmp_path / "q8", "cs256", quant="int8")
    back = load_exported(tmp_path / "q8")
    W, Wq = model.model.layers[0].mlp.up_proj.weight, back.model.layers[0].mlp.up_proj.weight
    assert torch.equal(Wq == 0, W == 0) or bool(((Wq != 0) <= (W != 0)).all())
    assert (Wq - W).abs().max() <= W.abs().max() / 127
    with torch.no_grad():
        assert (back(ids).logits - ref).abs().max() < 0.05


def test_compressed_tensors_loads_with_the_package_decompressor(tmp_path, ids):
    from compressed_tensors.compressors import ModelCompressor
    from transformers import AutoConfig, AutoModelForCausalLM

    model = pruned_llama("2:4")
    ref = _reference(model, tmp_path, ids)
    out = tmp_path / "ct"
    export_model(model, tiny_tokenizer(), out, "compressed-tensors")
    cfg = json.loads((out / "config.json").read_text())["quantization_config"]
    assert cfg["quant_method"] == "compressed-tensors" and cfg["sparsity_config"]["format"] == "sparse-24-bitmask"
    config = AutoConfig.from_pretrained(out)
    del config.quantization_config
    fresh = AutoModelForCausalLM.from_config(config).eval()
    ModelCompressor.from_pretrained(str(out)).decompress(str(out), fresh)
    with torch.no_grad():
        assert torch.equal(fresh(ids).logits, ref)


def test_registry_lists_the_formats():
    assert {"hf", "cs256", "compressed-tensors"} <= set(available_formats())
    with pytest.raises(ValueError, match="unknown export format"):
        export_model(torch.nn.Linear(2, 2), None, "/nonexistent/x", "zip")


def test_semi_structured_24_on_cuda(tmp_path):
    if not torch.cuda.is_available():
        pytest.skip("2:4 semi-structured kernels need CUDA")
    from maskopt.export.semi_structured import to_semi_structured

    model = pruned_llama("2:4", hidden=256, inter=512).half().cuda()
    ids = torch.randint(0, VOCAB, (2, 64), device="cuda")
    with torch.no_grad():
        ref = model(ids).logits
        assert to_semi_structured(model) > 0
        assert (model(ids).logits - ref).abs().max() < 0.05


def test_cs256_export_uses_the_stored_masks_with_kept_zeros(tmp_path, ids):
    """A cs256 mask whose kept weights include exact zeros (dequantized GGUF weights have them): the masks
    saved by `maskopt prune` make the export fit without padding; from the zeros alone it does not fit."""
    from maskopt.export import MaskFitError
    from maskopt.export.api import export_folder
    from maskopt.io import MASKS_FILE, save_masks

    model = pruned_llama("cs256", 0.5)
    masks = {}
    with torch.no_grad():
        for name, mod in model.named_modules():
            if isinstance(mod, torch.nn.Linear) and name != "lm_head":
                masks[name] = mod.weight != 0
                kept = torch.nonzero(masks[name][0])[:3, 0]
                mod.weight[0, kept] = 0.0  # three kept weights of row 0 are exactly zero
    folder = save_model(model, tiny_tokenizer(), tmp_path / "pruned")
    with pytest.raises(MaskFitError, match="does not fit cs256"):
        export_folder(folder, tmp_path / "no-masks", "cs256")
    assert not (tmp_path / "no-masks").exists()
    save_masks(masks, folder / MASKS_FILE)
    info = export_folder(folder, tmp_path / "masks", "cs256")
    assert info["padded_zeros"] == 0 and info["kept"] == sum(int(m.sum()) for m in masks.values())
    ref, _ = load_model(folder)
    with torch.no_grad():
        assert torch.equal(load_exported(tmp_path / "masks")(ids).logits, ref(ids).logits)
    # a weight changed after pruning outside its stored mask is refused, not silently dropped
    name = "model.layers.0.mlp.up_proj"
    masks[name] = masks[name].clone()
    masks[name][1, torch.nonzero(masks[name][1])[0, 0]] = False
    save_masks(masks, folder / MASKS_FILE)
    with pytest.raises(MaskFitError, match="outside the stored mask"):
        export_folder(folder, tmp_path / "tampered", "cs256")
