"""Bad input to export / load: a clear error, nothing partial written, never silently wrong weights."""
import json

import pytest
import torch
from conftest import tiny_tokenizer
from test_export_formats import pruned_llama

from maskopt.export import ExportFormatError, MaskFitError, export_model, load_exported
from maskopt.run.output import OutputExistsError


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("exports")
    model = pruned_llama("2:4")  # fits cs256 and both compressed-tensors layouts
    export_model(model, tiny_tokenizer(), root / "cs256", "cs256")
    export_model(model, tiny_tokenizer(), root / "ct", "compressed-tensors")
    return root


def _copy(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_mask_not_fitting_cs256_is_refused_and_nothing_is_written(tmp_path):
    model = pruned_llama("per_row", 0.6)  # 320 − 192 = 128 kept per row, but not a multiple of 8 per tile
    with pytest.raises(MaskFitError, match="does not fit cs256"):
        export_model(model, tiny_tokenizer(), tmp_path / "out", "cs256")
    assert list(tmp_path.iterdir()) == []  # not even the temporary sibling
    with pytest.raises(MaskFitError, match="not 2:4"):
        export_model(model, tiny_tokenizer(), tmp_path / "out", "compressed-tensors", layout="2:4")
    assert list(tmp_path.iterdir()) == []


def test_existing_output_needs_overwrite(exported, tmp_path):
    out = _copy(exported / "cs256", tmp_path / "x")
    with pytest.raises(OutputExistsError):
        export_model(pruned_llama("2:4"), None, out, "cs256")


@pytest.mark.parametrize("fmt,file", [("cs256", "model.cs256.safetensors"), ("ct", "model.safetensors")])
def test_truncated_and_flipped_files(exported, tmp_path, fmt, file):
    for damage in ("truncate", "flip"):
        d = _copy(exported / fmt, tmp_path / f"{fmt}-{damage}")
        f = d / file
        data = bytearray(f.read_bytes())
        if damage == "truncate":
            data = data[: len(data) // 2]
        else:
            data[-100] ^= 0x40  # a bit inside the last tensor's data
        f.write_bytes(bytes(data))
        with pytest.raises(ExportFormatError, match="SHA-256 mismatch"):
            load_exported(d)
        # without the recorded digest the format's own checks still refuse the truncated file
        info = json.loads((d / "maskopt_export.json").read_text())
        info["sha256"] = {}
        (d / "maskopt_export.json").write_text(json.dumps(info))
        if damage == "truncate":
            with pytest.raises(ExportFormatError, match="truncated"):
                load_exported(d)


def test_cs256_structural_corruption_without_digest(exported, tmp_path):
    from safetensors.torch import load_file, save_file

    d = _copy(exported / "cs256", tmp_path / "c")
    f = d / "model.cs256.safetensors"
    from safetensors import safe_open

    with safe_open(str(f), "pt") as fh:
        meta = fh.metadata()
    tensors = load_file(str(f))
    key = next(k for k in tensors if k.endswith("cs256_positions"))
    tensors[key] = tensors[key][:-8]
    save_file(tensors, str(f), metadata=meta)
    info = json.loads((d / "maskopt_export.json").read_text())
    info["sha256"] = {}
    (d / "maskopt_export.json").write_text(json.dumps(info))
    with pytest.raises(ExportFormatError, match="truncated or corrupted"):
        load_exported(d)


@pytest.mark.parametrize("fmt", ["cs256", "ct"])
def test_mismatched_shapes(exported, tmp_path, fmt):
    d = _copy(exported / fmt, tmp_path / fmt)
    cfg = json.loads((d / "config.json").read_text())
    cfg["intermediate_size"] = 512
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ExportFormatError, match="shape"):
        load_exported(d)
    cfg["num_hidden_layers"] = 2
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ExportFormatError, match="missing"):
        load_exported(d)


def test_not_an_export(tmp_path):
    with pytest.raises(ExportFormatError, match="neither"):
        load_exported(tmp_path)
    (tmp_path / "maskopt_export.json").write_text("{")
    with pytest.raises(ExportFormatError, match="JSON"):
        load_exported(tmp_path)
