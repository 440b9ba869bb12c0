"""Streaming: a checkpoint pruned one block at a time (the rest on disk) gives the in-memory run's masks and
weights bit for bit, in shards of one block; what it cannot do is refused; a killed streamed run resumes."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from typer.testing import CliRunner

from conftest import random_text, tiny_model, tiny_tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")
runner = CliRunner()


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    root = tmp_path_factory.mktemp("stream")
    model = tiny_model("llama")
    model.config.num_hidden_layers = 2
    model.save_pretrained(root / "model", max_shard_size="20KB")  # several shards and an index, as big models come
    tiny_tokenizer().save_pretrained(root / "model")
    (root / "calib.txt").write_text(random_text(3000))
    return root


def _prune(root, out, *extra, no_eval=True):
    from maskopt.cli import app

    return runner.invoke(app, ["prune", str(root / "model"), "--calib", str(root / "calib.txt"), "--nsamples", "8",
                               "--seqlen", "16", "-q", *(["--no-eval"] if no_eval else []), "--method", "sparsegpt",
                               "--out", str(root / out), *extra])


def _state(path):
    from maskopt.model.loading import load_model

    return load_model(path)[0].state_dict()


@pytest.mark.parametrize("extra", [[], ["--allocation", "owl", "--refit"]])
def test_streamed_prune_equals_the_in_memory_one(ckpt, extra):
    tag = "-".join(extra) or "plain"
    assert (ckpt / "model" / "model.safetensors.index.json").is_file()
    r = _prune(ckpt, f"mem{tag}", *extra)
    assert r.exit_code == 0, r.output
    r = _prune(ckpt, f"str{tag}", "--stream", *extra)
    assert r.exit_code == 0, r.output
    a, b = _state(ckpt / f"mem{tag}"), _state(ckpt / f"str{tag}")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert (ckpt / f"mem{tag}" / "maskopt_masks.safetensors").read_bytes() == \
        (ckpt / f"str{tag}" / "maskopt_masks.safetensors").read_bytes()
    ra = json.loads((ckpt / f"mem{tag}" / "maskopt_report.json").read_text())
    rb = json.loads((ckpt / f"str{tag}" / "maskopt_report.json").read_text())
    assert ra["sparsity"] == pytest.approx(rb["sparsity"], abs=1e-3)
    assert len(list((ckpt / f"str{tag}").glob("model-*.safetensors"))) == 3  # one shard per block + the rest


def test_streaming_refuses_what_needs_the_whole_model(ckpt):
    for extra, says in ((["--recover", "matrix"], "'matrix' needs the whole model"),
                        (["--eval-text", str(ckpt / "calib.txt")], "evaluates a model as it is on disk")):
        r = _prune(ckpt, "x", "--stream", *extra, no_eval=False)
        assert r.exit_code == 2 and says in r.output, r.output
        assert not (ckpt / "x").exists()


def test_killed_streamed_run_resumes_bit_identical(ckpt, tmp_path):
    env = {**os.environ, "MASKOPT_KILL_AFTER": "0:0"}
    cmd = [sys.executable, "-m", "maskopt.testing", "prune", str(ckpt / "model"), "--calib", str(ckpt / "calib.txt"),
           "--nsamples", "8", "--seqlen", "16", "-q", "--no-eval", "--method", "sparsegpt", "--stream", "--threads",
           "1", "--out", str(tmp_path / "o")]
    first = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert first.returncode != 0 and not (tmp_path / "o").exists()
    env.pop("MASKOPT_KILL_AFTER")
    second = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert second.returncode == 0, second.stderr
    assert "resuming" in second.stderr
    a, b = _state(ckpt / "memplain") if (ckpt / "memplain").exists() else None, _state(tmp_path / "o")
    if a is not None:
        for k in a:
            assert torch.equal(a[k], b[k]), k


def test_dense_reference_is_streamed_not_copied(ckpt):
    """prune + reconstruction: the dense reference is read block by block from the checkpoint (never a copy of
    the model); the result equals the in-memory API's, where the reference is a copy."""
    import maskopt
    from maskopt.model.loading import load_model
    from maskopt.stages import make_stage, new_stage
    from maskopt.config import PruneConfig

    r = _prune(ckpt, "rec", "--recover", "matrix", "--recover", "block:epochs=1")
    assert r.exit_code == 0, r.output
    report = json.loads((ckpt / "rec" / "maskopt_report.json").read_text())
    assert report["inputs"]["dense_streamed"] is True
    model, tok = load_model(ckpt / "model")
    cfg = PruneConfig(method="sparsegpt", nsamples=8, seqlen=16, progress=False)
    maskopt.run_on([new_stage("prune", cfg), make_stage("matrix", "recover"), make_stage("block:epochs=1", "recover")],
                   model, tok, [str(ckpt / "calib.txt")], nsamples=8, seqlen=16, progress=False, log=lambda _m: None)
    saved = _state(ckpt / "rec")
    for k, v in model.state_dict().items():
        assert torch.equal(v, saved[k]), k


def _eval(path, text, *extra):
    from maskopt.cli import app

    r = runner.invoke(app, ["eval", str(path), "--text", str(text), "--seqlen", "16", "--json", "-q", *extra])
    assert r.exit_code == 0, r.output
    return json.loads(r.output[r.output.index("{"):])


def test_streamed_perplexity_equals_the_in_memory_one_one_block_at_a_time(ckpt, monkeypatch):
    """`maskopt eval --stream` (one block in memory, the model's own head on the stored hidden states) gives the
    in-memory perplexity, on the dense checkpoint and on a streamed prune's output; never two blocks loaded."""
    from maskopt.model import streaming

    r = _prune(ckpt, "streval", "--stream")
    assert r.exit_code == 0, r.output
    loads, most = [], [0]
    real_load = streaming.StreamedModel.load

    def load(self, i):
        out = real_load(self, i)
        loads.append(i)
        most[0] = max(most[0], len(self.loaded))
        assert self.model.get_input_embeddings().weight.is_meta  # given back once block 0's inputs are captured
        return out

    monkeypatch.setattr(streaming.StreamedModel, "load", load)
    for folder in (ckpt / "model", ckpt / "streval"):
        whole = _eval(folder, ckpt / "calib.txt")
        streamed = _eval(folder, ckpt / "calib.txt", "--stream")
        assert whole.keys() == streamed.keys()
        for k in whole:
            assert streamed[k] == pytest.approx(whole[k], rel=1e-9), k  # one scoring path: window_nlls
    assert loads and most[0] == 1


def test_streamed_eval_refuses_what_it_cannot_do(ckpt):
    from maskopt.cli import app

    r = runner.invoke(app, ["eval", str(ckpt / "model"), "--stream", "--tasks", "boolq"])
    assert r.exit_code == 2 and "need the whole model" in r.output, r.output


def test_streamed_prune_holds_no_embeddings_while_walking(ckpt, monkeypatch):
    from maskopt.model import streaming

    seen = []
    real_load = streaming.StreamedModel.load

    def load(self, i):
        seen.append(self.model.get_input_embeddings().weight.is_meta)
        return real_load(self, i)

    monkeypatch.setattr(streaming.StreamedModel, "load", load)
    r = _prune(ckpt, "noemb", "--stream", "--allocation", "owl")
    assert r.exit_code == 0, r.output
    assert seen and all(seen)
    a, b = _state(ckpt / "model"), _state(ckpt / "noemb")
    for k in a:
        if "layers." not in k:
            assert torch.equal(a[k], b[k]), k  # the tensors outside the blocks are saved unchanged


def test_streamed_prune_keeps_its_masks_bit_packed(ckpt, monkeypatch):
    """A streamed run holds its masks at one bit per weight (a bool mask per layer would grow by a byte per weight
    of the model, block after block)."""
    from maskopt.model import streaming

    packed = []
    real = streaming.PackedMasks.__setitem__

    def setitem(self, name, mask):
        packed.append(name)
        return real(self, name, mask)

    monkeypatch.setattr(streaming.PackedMasks, "__setitem__", setitem)
    r = _prune(ckpt, "packed", "--stream")
    assert r.exit_code == 0, r.output
    report = json.loads((ckpt / "packed" / "maskopt_report.json").read_text())
    assert {rec["name"] for rec in report["layers"]} <= set(packed) and len(report["layers"]) == 14
