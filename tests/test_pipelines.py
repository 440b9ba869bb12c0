"""Pipelines pruned several times: maskopt.perplexity.pipeline_perplexity against closed forms and the one-pruning
paired bootstrap, and bench/pipelines.py reading scorings from JSON and JSONL lines."""
import json
import math
import sys
from pathlib import Path

import pytest
import torch

from maskopt.perplexity import paired_bootstrap, pipeline_perplexity

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

TOK = [99.0] * 12


def _flat(nll_per_token: float) -> list[float]:
    """Every window alike: no window noise, perplexity exp(nll_per_token) on any resample."""
    return [nll_per_token * 99.0] * 12


def test_one_pruning_each_is_exactly_the_paired_window_bootstrap():
    gen = torch.Generator().manual_seed(1)
    a, b = (torch.rand(12, generator=gen) * 99 + 300).tolist(), (torch.rand(12, generator=gen) * 99 + 300).tolist()
    one, ref = pipeline_perplexity([a], [b], TOK, n_boot=500), paired_bootstrap(a, b, TOK, n_boot=500)
    for k in ("diff", "diff_lo", "diff_hi", "ratio", "ratio_lo", "ratio_hi", "p_a_better"):
        assert one[k] == pytest.approx(ref[k], rel=1e-12), k


def test_prunings_that_disagree_give_the_interval_of_their_draws():
    """A's two prunings at e³, B's at e³ and e⁴, no window noise: B's resampled mean is e³, (e³+e⁴)/2 or e⁴ with
    probability 1/4, 1/2, 1/4, so Δ's interval is [e³ − e⁴, 0] where a single pair would be a point."""
    x, y = _flat(3.0), _flat(4.0)
    r = pipeline_perplexity([x, x], [x, y], TOK, n_boot=4000)
    e3, e4 = math.exp(3), math.exp(4)
    assert r["per_pruning_a"] == pytest.approx([e3, e3]) and r["per_pruning_b"] == pytest.approx([e3, e4])
    assert r["diff"] == pytest.approx(e3 - (e3 + e4) / 2)
    assert r["diff_lo"] == pytest.approx(e3 - e4) and r["diff_hi"] == pytest.approx(0.0, abs=1e-9)
    assert r["p_a_better"] == pytest.approx(0.75, abs=0.03)
    paired = pipeline_perplexity([x, y], [x, y], TOK, paired_prunings=True, n_boot=300)
    assert paired["diff_lo"] == paired["diff_hi"] == 0.0  # drawn together: always the same pair
    with pytest.raises(ValueError, match="as many on each side"):
        pipeline_perplexity([x, y], [x], TOK, paired_prunings=True)
    with pytest.raises(ValueError, match="same windows"):
        pipeline_perplexity([x], [x[:5]], TOK)


def test_bench_pipelines_reads_json_and_jsonl_lines_and_writes_its_table(tmp_path, monkeypatch):
    import pipelines

    monkeypatch.setattr(pipelines, "JSONL", tmp_path / "p.jsonl")
    monkeypatch.setattr(pipelines, "write_md", lambda name, lines: "\n".join(lines))

    def row(v: float, seed: int = 0, n: int = 12) -> dict:
        t = {"nll": _flat(v)[:n], "seqlen": 100}
        return {"method": "alps", "setting": "50%", "calib_seed": seed, "wikitext": t, "heldout": t}

    (tmp_path / "a0.json").write_text(json.dumps(row(3.0)))
    (tmp_path / "rows.jsonl").write_text(json.dumps(row(3.0, 1)) + "\n" + json.dumps(row(3.0, 2, n=20)) + "\n")
    (tmp_path / "b0.json").write_text(json.dumps(row(4.0)))
    (tmp_path / "b1.json").write_text(json.dumps({**row(4.0, 1), "heldout": {}}))
    out = pipelines.compare([str(tmp_path / "a0.json"), f"{tmp_path}/rows.jsonl:2"],
                            [str(tmp_path / "b0.json"), str(tmp_path / "b1.json")], "A vs B", True, 200)
    assert out["a_what"] == ["alps 50% seed 0", "alps 50% seed 2"]
    assert out["wikitext"]["windows"] == 12  # the first windows every scoring holds
    assert "heldout" not in out  # one scoring has no heldout NLL: that text is left out, not half-compared
    assert out["wikitext"]["diff"] == pytest.approx(math.exp(3) - math.exp(4))
    table = pipelines.write_table()
    assert "| A vs B (paired by seed) | wikitext (12) | 20.09 / 20.09 | 54.60 / 54.60 |" in table
    with pytest.raises(SystemExit, match="no row on line 3"):
        pipelines.load_scoring(f"{tmp_path}/rows.jsonl:3")
    with pytest.raises(SystemExit, match="no such file"):
        pipelines.load_scoring(str(tmp_path / "missing.json"))
