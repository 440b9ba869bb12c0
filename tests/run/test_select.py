"""targets / ignore / sparsity overrides: which linears are pruned, on every adapter family, and clear refusals."""
from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from conftest import FAMILIES, random_text, save_tiny

pytestmark = pytest.mark.usefixtures("one_thread")
runner = CliRunner()


def _prune(tmp, family, *extra):
    from maskopt.cli import app

    model = tmp / family
    if not model.exists():
        save_tiny(family, model)
    text = tmp / "calib.txt"
    text.write_text(random_text(3000))
    out = tmp / f"out-{family}-{len(list(tmp.iterdir()))}"
    r = runner.invoke(app, ["prune", str(model), "--calib", str(text), "--nsamples", "8", "--seqlen", "16", "-q",
                            "--no-eval", "--sparsity", "0.5", "--out", str(out), *extra])
    return r, out


@pytest.mark.parametrize("family", ["llama", "opt", "gpt2", "gpt_neox"])
def test_ignore_and_targets_prune_exactly_the_chosen_linears(family, tmp_path):
    from maskopt.model.adapters import get_adapter
    from maskopt.model.loading import load_model

    from maskopt.run.job import JobInputs  # noqa: F401  (the run's own imports load cleanly)

    model = save_tiny(family, tmp_path / family)
    ref, _ = load_model(model)
    adapter = get_adapter(ref)
    names = list(adapter.named_linears(ref))
    first, last = names[0], names[-1]
    r, out = _prune(tmp_path, family, "--ignore", first, "--ignore", f"re:{last.rsplit('.', 1)[0]}\\.")
    assert r.exit_code == 0, r.output
    pruned, _ = load_model(out)
    lin = adapter.named_linears(pruned)
    dense = {first} | {n for n in names if n.startswith(last.rsplit(".", 1)[0] + ".")}
    for n, m in lin.items():
        zeros = float((m.weight == 0).float().mean())
        assert (zeros == 0.0) if n in dense else zeros == pytest.approx(0.5, abs=0.02), (n, zeros)
    report = json.loads((out / "maskopt_report.json").read_text())
    assert set(report["dense_layers"]) == dense and report["sparsity"] == pytest.approx(0.5, abs=0.02)
    # targets: only the first block's linears; an override sets one layer's sparsity
    block0 = first.rsplit(".", 2)[0] if family != "gpt2" else first.rsplit(".", 3)[0]
    r, out = _prune(tmp_path, family, "--targets", f"re:{block0}\\.", "--sparsity-override", f"{first}=0.25")
    assert r.exit_code == 0, r.output
    lin = adapter.named_linears(load_model(out)[0])
    for n, m in lin.items():
        zeros = float((m.weight == 0).float().mean())
        want = 0.25 if n == first else 0.5 if n.startswith(block0 + ".") else 0.0
        assert zeros == pytest.approx(want, abs=0.02), (n, zeros, want)


def test_class_name_target_and_refusals(tmp_path):
    r, out = _prune(tmp_path, "llama", "--targets", "Linear")
    assert r.exit_code == 0, r.output
    for extra, says in ((["--ignore", "model.layers.0.mlp.nope"], "matches no prunable linear"),
                        (["--targets", "re:("], "not a valid regular expression"),
                        (["--ignore", "Linear"], "leave no linear to prune"),
                        (["--sparsity-override", "Linear=1.5"], "sparsity must be in [0, 1)"),
                        (["--sparsity-override", "Linear"], "PATTERN=SPARSITY")):
        r, out = _prune(tmp_path, "llama", *extra)
        assert r.exit_code == 2 and says in r.output and not out.exists(), (extra, r.output)


def test_owl_and_certify_with_a_selection(tmp_path):
    from maskopt.cli import app

    r, out = _prune(tmp_path, "llama", "--allocation", "owl", "--ignore", "re:.*down_proj")
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["certify", str(out), "--calib", str(tmp_path / "calib.txt"), "--nsamples", "8",
                            "--seqlen", "16", "-q", "--iterations", "5"])
    assert r.exit_code == 0, r.output
    assert "down_proj" not in r.output and "q_proj" in r.output
