"""`maskopt prune --pattern cs256` → `maskopt export` → `maskopt eval --tasks` on the exported folder."""
import json

import torch
from conftest import save_tiny
from test_zeroshot import DOCS
from typer.testing import CliRunner

from maskopt.cli import app
from maskopt.export import load_exported
from maskopt.model.loading import load_model
from maskopt.solve.patterns import tile_counts

runner = CliRunner()


def test_prune_cs256_export_and_zero_shot(tmp_path, text_file):
    model_dir = save_tiny("llama", tmp_path / "model")
    pruned = tmp_path / "pruned"
    r = runner.invoke(app, ["prune", str(model_dir), "--calib", str(text_file), "--nsamples", "8", "--seqlen", "16",
                            "--method", "sparseswaps", "--pattern", "cs256", "--sparsity", "0.5", "--no-eval",
                            "--out", str(pruned), "-q"])
    assert r.exit_code == 0, r.output
    ref, _ = load_model(pruned)
    W = ref.model.layers[0].mlp.down_proj.weight
    assert ((tile_counts(W != 0) % 8) == 0).all()

    out = tmp_path / "cs"
    r = runner.invoke(app, ["export", str(pruned), "--format", "cs256", "--out", str(out), "--opt", "quant=none",
                            "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["format"] == "cs256"
    ids = torch.randint(0, 90, (2, 16))
    with torch.no_grad():
        assert torch.equal(load_exported(out)(ids).logits, ref(ids).logits)

    ppl = [json.loads(runner.invoke(app, ["eval", str(d), "--text", str(text_file), "--max-windows", "2", "-q",
                                          "--json"]).stdout) for d in (out, pruned)]
    assert list(ppl[0].values()) == list(ppl[1].values())

    data = tmp_path / "mc.jsonl"
    data.write_text("".join(json.dumps(d) + "\n" for d in DOCS))
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "t.yaml").write_text(
        f"task: tiny_mc\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {data}\ntest_split: test\n"
        'output_type: multiple_choice\ndoc_to_text: "{{question}}"\ndoc_to_choice: "{{choices}}"\n'
        "doc_to_target: label\nmetric_list:\n  - metric: acc\n")
    r1 = runner.invoke(app, ["eval", str(out), "--tasks", "tiny_mc", "--task-dir", str(tasks), "--json"])
    r2 = runner.invoke(app, ["eval", str(pruned), "--tasks", "tiny_mc", "--task-dir", str(tasks), "--json"])
    assert r1.exit_code == 0 and r2.exit_code == 0, r1.output + r2.output
    assert json.loads(r1.stdout[r1.stdout.index("{"):]) == json.loads(r2.stdout[r2.stdout.index("{"):])


def test_export_errors_exit_cleanly(tmp_path):
    model_dir = save_tiny("llama", tmp_path / "model")  # dense: every tile keeps all 32 / 48 → fits cs256
    out = tmp_path / "o"
    r = runner.invoke(app, ["export", str(model_dir), "--format", "cs256", "--out", str(out), "--opt", "g=7"])
    assert r.exit_code == 2 and "group size" in r.output and not out.exists()
    r = runner.invoke(app, ["export", str(model_dir), "--format", "cs256", "--out", str(out), "--opt", "nope=1"])
    assert r.exit_code == 2 and "no option" in r.output
    r = runner.invoke(app, ["export", str(model_dir), "--format", "zip", "--out", str(out)])
    assert r.exit_code == 2 and "unknown export format" in r.output
    r = runner.invoke(app, ["export", str(model_dir), "--format", "compressed-tensors", "--out", str(out)])
    assert r.exit_code == 2 and "nothing to compress" in r.output and not out.exists()
    r = runner.invoke(app, ["eval", str(model_dir), "--tasks", "arc_easy"])
    assert r.exit_code == 2 and "--task-data arc_easy=" in r.output
