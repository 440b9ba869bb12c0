"""Property: whatever option values a user types, every subcommand either works (exit 0) or refuses with a
message (exit 2) — never a traceback, never exit code 1 (an unhandled exception)."""
from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from conftest import random_text, save_tiny

pytestmark = pytest.mark.usefixtures("one_thread")
WEIRD = ["", "0", "-1", "1", "0.5", "2", "1e309", "nan", "inf", "-inf", "abc", "2:4", "0:0", "1:0", "-", "=", "a=b",
         "1,2", "5-2", "none", "ü", "../x", "/dev/null"]
weird = st.sampled_from(WEIRD)
SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    from maskopt.cli import app

    root = tmp_path_factory.mktemp("fuzz")
    save_tiny("llama", root / "model")
    (root / "calib.txt").write_text(random_text(3000))
    r = CliRunner().invoke(app, ["prune", str(root / "model"), "--calib", str(root / "calib.txt"), "--nsamples", "8",
                                 "--seqlen", "16", "-q", "--no-eval", "--out", str(root / "pruned")])
    assert r.exit_code == 0, r.output
    return root


def options(pairs: dict[str, st.SearchStrategy]) -> st.SearchStrategy:
    """A random subset of ``pairs`` as a flat argument list."""
    return st.lists(st.sampled_from(sorted(pairs)), unique=True, max_size=4).flatmap(
        lambda keys: st.tuples(*[pairs[k].map(lambda v, k=k: [k, v]) for k in keys]) if keys else st.just(()))


def check(args: list[str]) -> None:
    from maskopt.cli import app

    r = CliRunner().invoke(app, args)
    assert r.exit_code in (0, 2), (args, r.output, repr(r.exception))
    assert "Traceback" not in r.output, (args, r.output)


def flat(opts) -> list[str]:
    return [x for pair in opts for x in pair]


def fresh(root: Path) -> str:
    return str(root / "outs" / uuid.uuid4().hex[:8])


PRUNE = {
    "--method": st.sampled_from(["wanda", "magnitude", "sparsegpt", "ria", "sparseswaps", "sparsefw", "nope", ""]),
    "--sparsity": weird, "--pattern": st.sampled_from(["per_row", "unstructured", "2:4", "cs256", "cs256:3", *WEIRD]),
    "--nsamples": st.sampled_from(["0", "-1", "abc", "4", "8"]), "--seqlen": st.sampled_from(["0", "1", "-5", "16", "999"]),
    "--opt": st.sampled_from(["max_iter=abc", "alpha=2", "iterations=-1", "warm_start=nope", "wat=1", "=", "x"]),
    "--batch-size": weird, "--threads": st.sampled_from(["0", "-1", "abc", "1"]),
    "--allocation": weird, "--owl-lambda": weird, "--owl-m": weird, "--seed": weird,
    "--recover": st.sampled_from(["nope", "matrix:lr=abc", "masklora:steps=-1", "matrix:", ":", "full:epochs=0"]),
    "--device": st.sampled_from(["cuda", "tpu", "cuda:7", "", "cpu:x"]),
}


@SETTINGS
@given(opts=options(PRUNE))
def test_prune_options(files, opts):
    check(["prune", str(files / "model"), "--calib", str(files / "calib.txt"), "--nsamples", "8", "--seqlen", "16",
           "-q", "--no-eval", *flat(opts), "--out", fresh(files)])


CERTIFY = {"--iterations": weird, "--bnb-rows": st.sampled_from(["-1", "0", "abc", "1"]),
           "--bnb-time-limit": st.sampled_from(["0", "-1", "nan", "0.01", "abc", "inf"]),
           "--shift": weird, "--sparsity": weird, "--pattern": weird, "--nsamples": st.sampled_from(["0", "abc", "8"])}


@SETTINGS
@given(opts=options(CERTIFY))
def test_certify_options(files, opts):
    check(["certify", str(files / "pruned"), "--calib", str(files / "calib.txt"), "--nsamples", "8", "--seqlen",
           "16", "-q", "--iterations", "3", *flat(opts)])


EXPORT = {"--format": st.sampled_from(["hf", "cs256", "compressed-tensors", "nope", *WEIRD]),
          "--opt": st.sampled_from(["g=abc", "g=7", "quant=int3", "pad=maybe", "qgroup=0", "layout=1:2", "x", "="])}


@SETTINGS
@given(opts=options(EXPORT))
def test_export_options(files, opts):
    check(["export", str(files / "pruned"), *flat(opts), "--out", fresh(files)])


EVAL = {"--seqlen": weird, "--max-windows": weird, "--text": st.sampled_from(["/dev/null", "nope.txt", "", "calib"]),
        "--tasks": st.sampled_from(["nope", ",", "boolq"]), "--task-data": st.sampled_from(["x", "boolq=nope.jsonl"])}


@SETTINGS
@given(opts=options(EVAL))
def test_eval_options(files, opts):
    args = [str(files / "calib.txt") if a == "calib" else a for a in flat(opts)]
    check(["eval", str(files / "pruned"), "-q", *args])


TRAIN = {"--budget": st.sampled_from(["0", "-1", "abc", "2", "1e309", "nanep"]), "--lr": weird, "--k": weird,
         "--width": weird, "--constraint": weird, "--schedule": weird, "--sparsities": weird,
         "--retrain": st.sampled_from(["0", "-1", "abc", "2", "0ep"]), "--pruner": weird, "--scope": weird,
         "--pattern": weird, "--init": st.sampled_from(["nope.pt", "/dev/null", ""]), "--momentum": weird,
         "--dense-budget": st.sampled_from(["0", "abc", "-1", "2"]), "--seed": weird}
TRAIN_OPTS = {"sfw": ["--budget", "--lr", "--k", "--width", "--constraint", "--momentum", "--init", "--seed",
                      "--pruner", "--scope", "--pattern"],
              "imp": ["--sparsities", "--retrain", "--schedule", "--pruner", "--scope", "--dense-budget", "--init",
                      "--lr", "--pattern"]}


@SETTINGS
@given(data=st.data())
def test_train_options(files, data):
    command = data.draw(st.sampled_from(sorted(TRAIN_OPTS)))
    opts = data.draw(options({k: TRAIN[k] for k in TRAIN_OPTS[command]}))
    base = ["--budget", "2", "--prune-at", "0.5"] if command == "sfw" else ["--dense-budget", "0", "--retrain", "2",
                                                                             "--sparsities", "0.5"]
    check(["train", command, "--arch", "mlp", "--batch-size", "128", *base, *flat(opts), "-o", fresh(files)])


def teardown_module(module):  # the outputs of the valid examples
    shutil.rmtree(Path("outs"), ignore_errors=True)


STAGE_NAMES = ["prune", "evaluate", "matrix", "masklora", "certify", "save", "export", "nope", ""]
OPTION_VALUES = st.sampled_from([None, 0, -1, 1.5, "abc", [], {}, [1], {"a": 1}, True, "2:4", "wanda", "nan"])
OPTION_KEYS = st.sampled_from(["method", "sparsity", "pattern", "steps", "lr", "texts", "label", "format", "out",
                               "targets", "ignore", "iterations", "wat", "nsamples"])


@SETTINGS
@given(stages=st.lists(st.tuples(st.sampled_from(STAGE_NAMES), st.dictionaries(OPTION_KEYS, OPTION_VALUES, max_size=2)),
                       max_size=3),
       calib=st.dictionaries(st.sampled_from(["nsamples", "seqlen", "seed", "tokens"]),
                             st.sampled_from([0, -1, 8, "x", None]), max_size=2))
def test_run_recipes(files, stages, calib):
    import yaml

    recipe = files / "outs" / f"{uuid.uuid4().hex[:8]}.yaml"
    recipe.parent.mkdir(exist_ok=True)
    recipe.write_text(yaml.safe_dump({"calibration": {"texts": [str(files / "calib.txt")], "seqlen": 16, **calib},
                                      "stages": [{n: o} for n, o in stages]}))
    check(["run", str(recipe), "--model", str(files / "model"), "--out", fresh(files), "-q"])
