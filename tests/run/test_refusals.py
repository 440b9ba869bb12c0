"""What maskopt refuses, and what it says: one test per case, and the README table made from them.

Every case runs the command line as a user would and checks the exit code, the message, that nothing
was written, and (where the case says so) that it failed before any model was loaded.
`python tests/test_refusals.py` prints the README table from the CASES below.
"""
from __future__ import annotations

import json
import os
import stat
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

sys.path.insert(0, str(Path(__file__).parents[1]))  # tests/: conftest
from conftest import random_text, save_tiny, tiny_tokenizer  # noqa: E402


@dataclass
class Case:
    id: str
    what: str  # what the user does
    says: str  # a fragment of what maskopt answers
    setup: Callable[[Path], list[str]]  # tmp folder → command line arguments
    before_load: bool = False  # the refusal comes before any model is loaded
    env: dict | None = None
    when: str = "before any pruning work"  # for the README table when not before loading


def _model(tmp: Path) -> Path:
    p = tmp / "model"
    if not p.exists():
        save_tiny("llama", p)
    return p


def _text(tmp: Path, name: str = "calib.txt", data: bytes | None = None) -> Path:
    p = tmp / name
    if data is None:
        p.write_text(random_text(3000))
    else:
        p.write_bytes(data)
    return p


def _prune(tmp: Path, *extra: str, out: str | None = "out", calib: Path | None = None) -> list[str]:
    args = ["prune", str(_model(tmp)), "--calib", str(calib or _text(tmp)), "--nsamples", "8", "--seqlen", "16",
            "-q", "--no-eval", *extra]
    return args + (["--out", str(tmp / out) if not out.startswith(("/", ".")) else out] if out is not None else [])


def _file_parent(tmp: Path) -> list[str]:
    (tmp / "afile").write_text("x")
    return _prune(tmp, out="afile/pruned")


def _phi3(tmp: Path) -> list[str]:
    from transformers import AutoModelForCausalLM, Phi3Config

    d = tmp / "phi3"
    AutoModelForCausalLM.from_config(Phi3Config(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                                num_attention_heads=4, num_key_value_heads=4, vocab_size=96,
                                                pad_token_id=0)).save_pretrained(d)
    tiny_tokenizer().save_pretrained(d)
    return ["prune", str(d), "--calib", str(_text(tmp)), "--nsamples", "8", "--seqlen", "16", "--out", str(tmp / "out")]


def _bert(tmp: Path) -> list[str]:
    from transformers import BertConfig, BertLMHeadModel

    d = tmp / "bert"
    BertLMHeadModel(BertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                               vocab_size=96, is_decoder=True)).save_pretrained(d)
    (d / "model.safetensors").unlink()  # weights never read: the architecture check comes first
    return ["prune", str(d), "--calib", str(_text(tmp)), "--out", str(tmp / "out")]


MARKER = "remote_code_ran.txt"


def _remote_code(tmp: Path) -> list[str]:
    d = tmp / "remote"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({
        "model_type": "evilmodel", "auto_map": {"AutoConfig": "configuration_evil.EvilConfig",
                                                 "AutoModelForCausalLM": "modeling_evil.EvilModel"}}))
    code = f"open({str(tmp / MARKER)!r}, 'w').write('ran')\nfrom transformers import PretrainedConfig\n" \
           "class EvilConfig(PretrainedConfig):\n    model_type = 'evilmodel'\n"
    (d / "configuration_evil.py").write_text(code)
    (d / "modeling_evil.py").write_text(code)
    return ["prune", str(d), "--calib", str(_text(tmp)), "--out", str(tmp / "out")]


def _gpt2(tmp: Path) -> Path:
    p = tmp / "gpt2"
    if not p.exists():
        save_tiny("gpt2", p)
    return p


def _stale(tmp: Path) -> list[str]:
    (tmp / ".out.tmp-old123").mkdir()
    (tmp / ".out.tmp-old123" / "model.safetensors").write_text("half")
    return _prune(tmp)


def _pruned(tmp: Path) -> Path:
    from typer.testing import CliRunner

    from maskopt.cli import app

    p = tmp / "pruned"
    if not p.exists():
        r = CliRunner().invoke(app, _prune(tmp, out="pruned"))
        assert r.exit_code == 0, r.output
    return p


def _auto_map_llama(tmp: Path) -> list[str]:
    d = _model(tmp)
    cfg = json.loads((d / "config.json").read_text())
    cfg["auto_map"] = {"AutoModelForCausalLM": "modeling_mine.MyLlama"}
    (d / "config.json").write_text(json.dumps(cfg))
    return _prune(tmp)


def _pickle_only(tmp: Path) -> list[str]:
    import torch

    d = _model(tmp)
    torch.save({"x": torch.zeros(1)}, d / "pytorch_model.bin")
    (d / "model.safetensors").unlink()
    return _prune(tmp)


def _truncated_gguf(tmp: Path) -> list[str]:
    src = SHARED_GGUF
    with open(src, "rb") as f:
        (tmp / "cut.gguf").write_bytes(f.read(4 << 20))
    return _prune(tmp)[:1] + [str(tmp / "cut.gguf")] + _prune(tmp)[2:]


def _evil_init(tmp: Path) -> list[str]:
    import torch

    class Evil:
        def __reduce__(self):
            return (open, (str(tmp / MARKER), "w"))

    torch.save({"x": Evil()}, tmp / "evil.pt")
    return ["train", "imp", "--arch", "mlp", "--init", str(tmp / "evil.pt"), "-o", str(tmp / "out")]


def _user_folder(tmp: Path) -> Path:
    (tmp / "out").mkdir()
    (tmp / "out" / "notes.txt").write_text("mine")
    return tmp / "out"


SHARED_GGUF = Path(__file__).resolve().parents[3] / "shared" / "models" / "smollm2-135m-instruct-q4_1" / \
    "SmolLM2-135M-Instruct.Q4_1.gguf"
CONFIG = "from the config, before any weight is read"
LATIN1 = ("Größe Übermaß naïve café déjà vu " * 300).encode("latin-1")
UTF16 = ("plain english text, but in UTF-16. " * 200).encode("utf-16")
BINARY = bytes(range(256)) * 40

CASES = [
    Case("out-missing", "`prune` without `--out`", "pass --out", lambda t: _prune(t, out=None), True),
    Case("out-dot", "`--out .` (the current folder)", "current folder", lambda t: _prune(t, out="."), True),
    Case("out-parent-file", "`--out afile/pruned` where `afile` is a file", "is a file", _file_parent, True),
    Case("out-unwritable", "`--out` under a folder that cannot be written (`/proc/…`)", "cannot",
         lambda t: _prune(t, out="/proc/maskopt-test/pruned"), True),
    Case("method-unknown", "`--method nope`", "unknown method", lambda t: _prune(t, "--method", "nope"), True),
    Case("opt-int", "`--opt max_iter=abc` (sparseswaps)", "expects an integer",
         lambda t: _prune(t, "--method", "sparseswaps", "--opt", "max_iter=abc"), True),
    Case("opt-bool", "`--opt keep_best=maybe` (sparsefw)", "boolean",
         lambda t: _prune(t, "--method", "sparsefw", "--opt", "keep_best=maybe"), True),
    Case("opt-unknown", "`--opt wat=1`", "no option", lambda t: _prune(t, "--opt", "wat=1"), True),
    Case("opt-choice", "`--opt dtype=float16` (sparseswaps)", "must be one of",
         lambda t: _prune(t, "--method", "sparseswaps", "--opt", "dtype=float16"), True),
    Case("opt-range", "`--opt alpha=2` (sparsefw)", "alpha must be in [0, 1)",
         lambda t: _prune(t, "--method", "sparsefw", "--opt", "alpha=2"), True),
    Case("opt-warm-start", "`--opt warm_start=nope` (sparseswaps)", "unknown warm start",
         lambda t: _prune(t, "--method", "sparseswaps", "--opt", "warm_start=nope"), True),
    Case("recover-unknown", "`--recover nope`", "unknown recover", lambda t: _prune(t, "--recover", "nope"), True),
    Case("match-unknown", "`--match teacher`", "match must be 'pruned' or 'dense'",
         lambda t: _prune(t, "--match", "teacher"), True),
    Case("match-strength", "`--match dense --match-strength 2`", "match_strength must be in (0, 1]",
         lambda t: _prune(t, "--match", "dense", "--match-strength", "2"), True),
    Case("recover-kd-loss", "`--recover masklora:loss=ce`", "loss must be 'lm'",
         lambda t: _prune(t, "--recover", "masklora:loss=ce"), True),
    Case("batch-size", "`--batch-size 0` (or negative)", "--batch-size must be ≥ 1",
         lambda t: _prune(t, "--batch-size", "0"), True),
    Case("threads", "`--threads 0`", "--threads must be ≥ 1", lambda t: _prune(t, "--threads", "0"), True),
    Case("device-cuda", "`--device cuda` on a machine without CUDA", "no CUDA",
         lambda t: _prune(t, "--device", "cuda"), True),
    Case("phi3", "a Phi-3 model (fused qkv_proj / gate_up_proj)", "unsupported architecture 'phi3'", _phi3,
         when=CONFIG),
    Case("bert", "a BERT config (not a decoder family maskopt knows)", "unsupported architecture 'bert'", _bert,
         when=CONFIG),
    Case("remote-code", "a model folder whose `auto_map` points at its own Python files", "--trust-remote-code",
         _remote_code, when=CONFIG),
    Case("offline-name", "a bare model name that is no local folder, offline", "unreachable",
         lambda t: ["prune", "no-such-model-xyz", "--calib", str(_text(t)), "--out", str(t / "out")],
         env={"HF_HUB_OFFLINE": "1"}, when="at once (no hub retries)"),
    Case("seqlen-llama", "`--seqlen 128` on a Llama with a 64-token context", "exceeds the model's context of 64",
         lambda t: _prune(t, "--seqlen", "128")),
    Case("seqlen-gpt2", "`--seqlen 128` on a GPT-2 with 64 positions", "exceeds the model's context of 64",
         lambda t: ["prune", str(_gpt2(t)), "--calib", str(_text(t)), "--nsamples", "4", "--seqlen", "128",
                    "--out", str(t / "out")]),
    Case("eval-seqlen", "`eval --seqlen 128` on a GPT-2 with 64 positions", "exceeds the model's context of 64",
         lambda t: ["eval", str(_gpt2(t)), "--text", str(_text(t)), "--seqlen", "128"]),
    Case("eval-max-windows", "`eval --max-windows -1`", "--max-windows must be ≥ 1",
         lambda t: ["eval", str(_model(t)), "--text", str(_text(t)), "--max-windows", "-1"]),
    Case("calib-latin1", "calibration text in Latin-1", "not UTF-8",
         lambda t: _prune(t, calib=_text(t, "latin1.txt", LATIN1))),
    Case("calib-utf16", "calibration text in UTF-16", "not UTF-8",
         lambda t: _prune(t, calib=_text(t, "utf16.txt", UTF16))),
    Case("calib-binary", "a binary file as calibration text", "not UTF-8",
         lambda t: _prune(t, calib=_text(t, "bin.txt", BINARY))),
    Case("calib-short", "calibration text shorter than the windows need", "are needed",
         lambda t: _prune(t, calib=_text(t, "short.txt", random_text(20).encode()))),
    Case("calib-missing", "`--calib nothere.txt`", "does not exist",
         lambda t: _prune(t, calib=t / "nothere.txt")),
    Case("recover-missing", "`recover ../nope --out x`", "does not exist",
         lambda t: ["recover", str(t / "nope"), "--out", str(t / "out")], True),
    Case("certify-missing", "`certify ../nope`", "does not exist", lambda t: ["certify", str(t / "nope")], True),
    Case("auto-map-llama", "a Llama folder whose `auto_map` names its own code", "ships its own model code",
         _auto_map_llama, when=CONFIG),
    Case("model-config-file", "`prune model/config.json` (a file, not the folder)", "is a file: pass the model folder",
         lambda t: _prune(t)[:1] + [str(_model(t) / "config.json")] + _prune(t)[2:], when=CONFIG),
    Case("model-pickle", "a model folder with only `pytorch_model.bin` (a pickle)", "which maskopt never loads",
         _pickle_only, when=CONFIG),
    Case("gguf-truncated", "a truncated .gguf file", "truncated", _truncated_gguf, when=CONFIG),
    Case("calib-device", "`--calib /dev/null`", "not a regular text file", lambda t: _prune(t, calib=Path("/dev/null"))),
    Case("calib-empty", "an empty calibration file", "is empty", lambda t: _prune(t, calib=_text(t, "e.txt", b""))),
    Case("calib-dataset-offline", "`--calib wikitext` (a dataset name) offline", "unreachable",
         lambda t: _prune(t)[:3] + ["wikitext"] + _prune(t)[4:], env={"HF_HUB_OFFLINE": "1"},
         when="at once (no hub retries)"),
    Case("cs256-too-sparse", "`--pattern cs256 --sparsity 0.99` (a row would keep no group of 8)", "rounded to 0",
         lambda t: _prune(t, "--pattern", "cs256", "--sparsity", "0.99")),
    Case("exact-rows", "`--method exact --opt rows=5-2`", "is empty",
         lambda t: _prune(t, "--method", "exact", "--opt", "rows=5-2"), True),
    Case("out-dangling-link", "`--out` a dangling symbolic link", "symbolic link",
         lambda t: (os.symlink(t / "nowhere", t / "link"), _prune(t, out="link"))[1], True),
    Case("out-user-folder", "`--out` your own folder, with `--overwrite`", "not a maskopt output",
         lambda t: (_user_folder(t), _prune(t, "--overwrite"))[1], True),
    Case("out-in-model", "`--out` inside the model folder", "inside the input",
         lambda t: _prune(t, out=str(_model(t) / "pruned")), True),
    Case("eval-seqlen-0", "`eval --seqlen 0`", "--seqlen must be ≥ 2",
         lambda t: ["eval", str(_model(t)), "--text", str(_text(t)), "--seqlen", "0"], True),
    Case("certify-out-weights", "`certify PRUNED -o PRUNED/model.safetensors`", "inside the input",
         lambda t: ["certify", str(_pruned(t)), "-o", str(_pruned(t) / "model.safetensors"), "--overwrite"], True),
    Case("certify-out-exists", "`certify -o notes.txt` (an existing file)", "pass --overwrite",
         lambda t: ["certify", str(_pruned(t)), "-o", str(_text(t, "notes.txt"))], True),
    Case("certify-out-folder", "`certify -o EXISTING_FOLDER`", "is a folder",
         lambda t: ["certify", str(_pruned(t)), "-o", str(_user_folder(t))], True),
    Case("certify-bnb-rows", "`certify --bnb-rows -1`", "--bnb-rows must be ≥ 0",
         lambda t: ["certify", str(_pruned(t)), "--calib", str(_text(t)), "--bnb-rows", "-1"], True),
    Case("export-format", "`export --format nope`", "unknown export format",
         lambda t: ["export", str(_pruned(t)), "--format", "nope", "--out", str(t / "out")], True),
    Case("export-user-folder", "`export --out` your own folder, with `--overwrite`", "not a maskopt output",
         lambda t: ["export", str(_pruned(t)), "--out", str(_user_folder(t)), "--overwrite"], True),
    Case("train-budget", "`train sfw --budget 0`", "budget",
         lambda t: ["train", "sfw", "--arch", "mlp", "--budget", "0", "-o", str(t / "out")], True),
    Case("train-init-pickle", "`train imp --init evil.pt` (a pickle that would run code)", "never unpickles",
         _evil_init, True),
    Case("train-out-link", "`train … -o` a symbolic link", "symbolic link",
         lambda t: (os.symlink(t / "nowhere", t / "link"),
                    ["train", "imp", "--arch", "mlp", "-o", str(t / "link")])[1], True),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_refusal(case: Case, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import maskopt.run.job
    from maskopt.cli import app

    for k, v in (case.env or {}).items():
        monkeypatch.setenv(k, v)
    args = case.setup(tmp_path)
    if case.before_load:
        def no_load(*a, **k):
            raise AssertionError("a model was loaded before the refusal")
        monkeypatch.setattr(maskopt.run.job, "load_model", no_load)
    before = tree(tmp_path)
    existed = (tmp_path / "out").exists()
    r = CliRunner().invoke(app, args, input="y\nyes\n")
    assert r.exit_code == 2, (r.output, r.exception)
    assert case.says in r.output, r.output
    assert "Traceback" not in r.output and "MISSING" not in r.output and "weights_only" not in r.output
    lines = r.output.strip().splitlines()
    assert lines[-1].startswith("error: ") and sum("error" in ln for ln in lines) == 1, r.output  # a one-line message
    assert (tmp_path / "out").exists() == existed
    assert not (tmp_path / MARKER).exists()  # a model folder's own code never ran
    after = tree(tmp_path)
    assert {k: v for k, v in after.items() if not k.startswith(".out.checkpoint")} == before  # nothing changed


def tree(root: Path) -> dict[str, str]:
    import hashlib

    return {p.relative_to(root).as_posix(): "link" if p.is_symlink() else "dir" if p.is_dir()
            else hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*"))}


def test_stale_tmp_folders_are_removed(tmp_path):
    from typer.testing import CliRunner

    from maskopt.cli import app

    r = CliRunner().invoke(app, _stale(tmp_path))
    assert r.exit_code == 0, r.output
    assert "removed 1 temporary folder" in r.output and not (tmp_path / ".out.tmp-old123").exists()
    mode = stat.S_IMODE(os.stat(tmp_path / "out").st_mode)
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o777 & ~umask  # not mkdtemp's 0700


def test_recover_without_stage_runs_the_recommended_one(tmp_path):
    from typer.testing import CliRunner

    from maskopt.cli import app

    runner = CliRunner()
    assert runner.invoke(app, _prune(tmp_path)).exit_code == 0
    r = runner.invoke(app, ["recover", str(tmp_path / "out"), "--out", str(tmp_path / "rec"), "--calib",
                            str(_text(tmp_path)), "--nsamples", "8", "--seqlen", "16"])
    assert r.exit_code == 0, r.output
    assert "recommended one, --recover masklora:loss=kd" in r.output  # the report names the dense model
    rec = json.loads((tmp_path / "rec" / "maskopt_report.json").read_text())["recovery"]["masklora"]
    assert rec["mode"] == "masklora" and rec["config"]["loss"] == "kd"


def test_recover_without_stage_or_dense_model_says_it_uses_the_lm_loss(tmp_path):
    import shutil

    from typer.testing import CliRunner

    from maskopt.cli import app

    runner = CliRunner()
    assert runner.invoke(app, _prune(tmp_path)).exit_code == 0
    shutil.copytree(tmp_path / "out", tmp_path / "bare")
    for f in (tmp_path / "bare").glob("maskopt_report.*"):  # another tool's pruned model: no report, no dense
        f.unlink()
    r = runner.invoke(app, ["recover", str(tmp_path / "bare"), "--out", str(tmp_path / "rec"), "--calib",
                            str(_text(tmp_path)), "--nsamples", "8", "--seqlen", "16"])
    assert r.exit_code == 0, r.output
    assert "no dense model known: running --recover masklora " in r.output and "pass --dense" in r.output
    rec = json.loads((tmp_path / "rec" / "maskopt_report.json").read_text())["recovery"]["masklora"]
    assert rec["mode"] == "masklora" and rec["config"]["loss"] == "lm"


def test_quiet_shows_no_progress_bars_and_eval_whole_text(tmp_path):
    from typer.testing import CliRunner

    from maskopt.cli import app

    runner = CliRunner()
    r = runner.invoke(app, _prune(tmp_path))
    assert r.exit_code == 0 and "it/s" not in r.output and "%|" not in r.output, r.output
    r = runner.invoke(app, ["eval", str(tmp_path / "out"), "--text", str(_text(tmp_path)), "--max-windows", "0",
                            "-q", "--json", "--seqlen", "16"])
    assert r.exit_code == 0 and "%|" not in r.output, r.output


def test_help_and_methods_are_complete():
    from typer.testing import CliRunner

    from maskopt.cli import app

    r = CliRunner().invoke(app, ["prune", "--help"], terminal_width=80)
    text = " ".join(r.output.split())  # wrapped at 80 columns, never cut
    assert "[default: 128]" in text and "[default: wanda]" in text and "--trust-remote-code" in text
    r = CliRunner().invoke(app, ["methods"])
    lines = [ln for ln in r.output.splitlines() if ln and not ln.startswith(" ")]
    assert all(": " in ln and len(ln.split(": ", 1)[1]) > 10 for ln in lines if not ln.startswith("recovery")), lines
    assert "max_iter=" in r.output and "—" in r.output


def markdown_table() -> str:
    rows = ["| what the user does | what maskopt says (excerpt) | when |", "|---|---|---|"]
    rows += [f"| {c.what} | {c.says} | {'before loading anything' if c.before_load else c.when} |" for c in CASES]
    return "\n".join(rows)


if __name__ == "__main__":
    print(markdown_table())
