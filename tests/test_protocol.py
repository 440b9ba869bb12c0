"""Protocol v2 (issue 20): per-window NLLs, bootstrap intervals, paired comparisons, and the calibration / tuning
split of WikiText-2 valid (disjoint; the tuning text never in a sampled window)."""
import math
import sys
from pathlib import Path

import pytest
import torch
from conftest import SHARED, needs_shared, tiny_model, tiny_tokenizer

from maskopt.data import make_windows
from maskopt.perplexity import (bootstrap_perplexity, paired_bootstrap, perplexity, perplexity_from_nlls,
                                window_nlls)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import protocol  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


def test_window_nlls_give_the_perplexity_of_the_evaluate_function():
    model = tiny_model("llama")
    windows = torch.randint(0, 96, (6, 40), generator=torch.Generator().manual_seed(0))
    nll, tok = window_nlls(model, windows, batch_size=4, progress=False)
    assert nll.shape == (6,) and nll.dtype == torch.float64 and tok.tolist() == [39.0] * 6
    assert perplexity_from_nlls(nll, tok) == pytest.approx(perplexity(model, windows, batch_size=4, progress=False),
                                                           rel=1e-6)
    # each window's sum is that window's own loss (batching does not mix windows)
    one = float(window_nlls(model, windows[2:3], progress=False)[0][0])
    assert float(nll[2]) == pytest.approx(one, rel=1e-6)


def test_constant_loss_gives_a_point_interval():
    nll, tok = torch.full((50,), 3.0 * 511), torch.full((50,), 511.0)
    lo, hi = bootstrap_perplexity(nll, tok, n_boot=300)
    assert lo == pytest.approx(math.exp(3.0), rel=1e-12) and hi == pytest.approx(math.exp(3.0), rel=1e-12)


def _sample(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    per_token = 3.0 + 0.4 * torch.randn(n, generator=g, dtype=torch.float64)  # windows differ in difficulty
    return per_token * 511, torch.full((n,), 511.0, dtype=torch.float64)


def test_interval_contains_the_estimate_shrinks_and_is_deterministic():
    nll, tok = _sample(32, 0)
    ppl = perplexity_from_nlls(nll, tok)
    lo, hi = bootstrap_perplexity(nll, tok, n_boot=1000, seed=0)
    assert lo < ppl < hi
    assert (lo, hi) == bootstrap_perplexity(nll, tok, n_boot=1000, seed=0)
    assert (lo, hi) != bootstrap_perplexity(nll, tok, n_boot=1000, seed=1)
    wide = bootstrap_perplexity(*_sample(32, 1), n_boot=1000)
    narrow = bootstrap_perplexity(*_sample(512, 1), n_boot=1000)
    assert narrow[1] - narrow[0] < 0.5 * (wide[1] - wide[0])  # ~ 1/√n: 4× fewer width with 16× the windows
    with pytest.raises(ValueError):
        bootstrap_perplexity(nll, tok[:5])


def test_interval_covers_the_true_perplexity_about_95_percent_of_the_time():
    true = math.exp(3.0)  # every window has 511 tokens and a per-token loss of mean 3.0
    covered = 0
    for s in range(80):
        lo, hi = bootstrap_perplexity(*_sample(64, 100 + s), n_boot=400, seed=s)
        covered += lo <= true <= hi
    assert 0.85 <= covered / 80 <= 1.0


def test_paired_bootstrap_sees_a_small_consistent_difference_and_no_difference():
    b, tok = _sample(128, 3)
    same = paired_bootstrap(b, b, tok, n_boot=500)
    assert same["diff"] == 0 and same["diff_lo"] == 0 and same["diff_hi"] == 0 and same["ratio"] == 1
    a = b + 0.01 * 511  # model A: 1% more loss per token on every window: tiny next to the spread of windows
    r = paired_bootstrap(a, b, tok, n_boot=500)
    assert 0 < r["diff_lo"] <= r["diff"] <= r["diff_hi"] and r["p_a_better"] == 0.0
    lo_a, hi_a = bootstrap_perplexity(a, tok, n_boot=500)
    lo_b, hi_b = bootstrap_perplexity(b, tok, n_boot=500)
    assert lo_a < hi_b  # unpaired intervals overlap: only the paired comparison resolves the difference
    with pytest.raises(ValueError, match="same windows"):
        paired_bootstrap(a[:10], b, tok)


def test_compare_rows_uses_the_common_first_windows():
    a, tok = _sample(200, 4)
    row_a = {"wikitext": {"nll": a.tolist(), "seqlen": 512}}
    row_b = {"wikitext": {"nll": (a[:128] * 1.02).tolist(), "seqlen": 512}}
    r = protocol.compare(row_a, row_b, n_boot=200)
    assert r["windows"] == 128 and r["diff_hi"] < 0 and r["ratio"] < 1


LINES_CALIB = [" ".join(f"w{(7 * i + j) % 80}" for j in range(12)) for i in range(960)]
LINES_TUNE = [" ".join(["w93"] * 6 + [f"w{i % 80}"] * 6) for i in range(40)]


def test_split_is_disjoint_and_no_calibration_window_touches_the_tuning_text(tmp_path):
    src = tmp_path / "valid.txt"
    src.write_text("\n".join(LINES_CALIB + LINES_TUNE) + "\n")
    s = protocol.write_splits(src, tmp_path / "cache")
    calib, tune = Path(s["calib"]).read_text(), Path(s["tune"]).read_text()
    assert calib + tune == src.read_text() and calib.endswith("\n")
    assert s["cut_chars"] >= 0.9 * s["total_chars"]
    assert "w93" not in calib and tune.count("w93") == 6 * len(LINES_TUNE)  # the marked lines are all past the cut
    tok, model = tiny_tokenizer(), tiny_model("llama")
    marker = tok.convert_tokens_to_ids("w93")
    w = protocol.calibration_windows(tok, model, nsamples=300, seqlen=24, splits=s)
    assert w.shape == (300, 24) and not (w == marker).any()
    whole = make_windows([str(src)], tok, model, 300, 24, 0)  # sampling the whole file does reach it
    assert (whole == marker).any()
    assert torch.equal(w, make_windows([s["calib"]], tok, model, 300, 24, 0))  # the prune job's own call
    w3 = protocol.calibration_windows(tok, model, nsamples=300, seqlen=24, seed=3, splits=s)  # --calib-seed 3
    assert torch.equal(w3, make_windows([s["calib"]], tok, model, 300, 24, 3)) and not torch.equal(w3, w)
    again = protocol.write_splits(src, tmp_path / "cache")
    assert again == s


def test_split_refuses_a_text_without_a_cut_point():
    with pytest.raises(ValueError):
        protocol.split_text("one single line without a break")
    with pytest.raises(ValueError):
        protocol.split_text("a\nb\n", tune_share=0)


@needs_shared
def test_the_real_split_of_wikitext_valid(tmp_path):
    s = protocol.write_splits(SHARED / "data" / "wikitext-2" / "valid.txt", tmp_path)
    calib, tune = Path(s["calib"]).read_text(), Path(s["tune"]).read_text()
    src = (SHARED / "data" / "wikitext-2" / "valid.txt").read_text()
    assert calib + tune == src
    assert 0.09 < len(tune) / len(src) < 0.11
    assert tune[:400] not in calib and tune[-400:] not in calib


def _row(method, setting, scale, **kw):
    nll, _ = _sample(128, 7)
    t = {"nll": (nll * scale).tolist(), "seqlen": 512, "ppl": perplexity_from_nlls(nll * scale, torch.full((128,), 511.0)),
         "lo": 1.0, "hi": 2.0}
    return {"model": "smollm", "method": method, "setting": setting, "recover": "none", "allocation": "uniform",
            "refit": False, "protocol": "v2", "eval_tag": "W128 H128 T Z500", "eval": {"wikitext_windows": 128},
            "wikitext": t, "heldout": t, "ppl": t["ppl"], **kw}


def test_scoreboard_reads_peer_files_and_resolves_differences(tmp_path, monkeypatch):
    import json

    import smollm

    monkeypatch.setattr(smollm, "PEERS_DIR", tmp_path)
    peer = _row("peer:llmc-sparsegpt", "50%", 1.01, peer_label="llm-compressor SparseGPT (unstructured)")
    (tmp_path / "llmc-sparsegpt-50pct.json").write_text(json.dumps(peer))
    rows = [_row("dense", "–", 0.8), _row("sparsegpt", "50%", 1.0), _row("wanda", "50%", 0.99)] + smollm.load_peers()
    md = smollm.table_v2(rows)
    line = {ln.split("|")[2].strip(): ln for ln in md.splitlines()[2:]}
    assert "✗" in line["**peer** llm-compressor SparseGPT (unstructured)"]  # 1% worse on every window: resolved
    assert "✓" in line["wanda"] and "✓" not in line["sparsegpt"]
    assert "A lower" in smollm.compare_rows(rows, "wanda", "sparsegpt @ 50%")


def test_scoreboard_merges_a_whole_set_rescore_with_the_earlier_zero_shot_row():
    import smollm

    first = _row("sparsegpt", "50%", 1.0, zeroshot={"limit": 500, "mean_acc": 0.4, "mean_acc_norm": 0.42, "tasks": {}},
                 prune_seconds=400.0, mean_relative_error=0.02, eval_seconds=100.0)
    nll, _ = _sample(595 - 128, 3)
    whole = _row("sparsegpt", "50%", 1.0, eval_tag="W0 H– Z–", eval={"wikitext_windows": 0}, mask_cached=True,
                 prune_seconds=9.0, eval_seconds=50.0)
    whole["wikitext"] = {"nll": first["wikitext"]["nll"] + nll.tolist(), "seqlen": 512, "ppl": 3.0, "lo": 2.9,
                         "hi": 3.1}  # the same model: its first 128 windows are the first row's
    del whole["heldout"]
    (merged,) = smollm.pick_rows([first, whole])
    assert len(merged["wikitext"]["nll"]) == 595  # the whole test set wins
    assert merged["zeroshot"]["limit"] == 500 and len(merged["heldout"]["nll"]) == 128  # kept from the first row
    assert merged["eval_tag"] == "W595 H128 Z500"
    assert merged["prune_seconds"] == 400.0 and merged["mean_relative_error"] == 0.02  # the row that pruned
    assert not merged.get("mask_cached") and merged["eval_seconds"] == 150.0 and merged["ppl"] == 3.0
    (alone,) = smollm.pick_rows([first])
    assert alone["eval_tag"] == "W128 H128 T Z500"  # one row: its own tag, untouched


def test_rows_of_one_configuration_that_are_not_one_model_are_not_merged():
    import smollm

    first = _row("sparsegpt", "70%", 1.0)
    other = _row("sparsegpt", "70%", 1.0, eval_tag="W595 H354 T Z–")
    other["heldout"] = dict(other["heldout"], nll=[x * 1.001 for x in other["heldout"]["nll"]])  # pruned differently
    with pytest.raises(ValueError, match="not one model"):
        smollm.pick_rows([first, other])
    assert len(smollm.pick_rows([first, _row("sparsegpt", "70%", 1.0, eval_tag="W595 H354 T Z–")])) == 1


def test_a_per_matrix_setting_is_compared_with_per_row_sparsegpt():
    import smollm

    rows = [_row("dense", "–", 0.8), _row("sparsegpt", "50%", 1.0), _row("alps", "50% per matrix", 0.97)]
    line = {ln.split("|")[1].strip() + ln.split("|")[2].strip(): ln for ln in smollm.table_v2(rows).splitlines()[2:]}
    assert "✓" in line["50% per matrixalps"]


def test_times_dense_is_taken_over_the_windows_both_rows_scored():
    import smollm

    dense = _row("dense", "–", 0.8)
    nll = dense["wikitext"]["nll"] + [4.0 * 511] * 467  # the whole test set: 595 windows, the later ones harder
    dense["wikitext"] = {**dense["wikitext"], "nll": nll, "ppl": 99.0}
    row = _row("sparsegpt", "50%", 1.0)
    cells = {ln.split("|")[1].strip(): ln.split("|")[5].strip() for ln in smollm.table_v2([dense, row]).splitlines()[2:]}
    expected = math.exp(sum(row["wikitext"]["nll"]) / (128 * 511) - sum(nll[:128]) / (128 * 511))
    assert cells["50%"] == f"{expected:.3f}" != f"{row['wikitext']['ppl'] / 99.0:.3f}"  # not against the whole set
    assert smollm.over_dense(row, dense) == pytest.approx(expected, rel=1e-12)


def test_changes_table_pairs_rows_of_the_same_pipeline_only():
    """A v1 row is set beside the v2 row of the same pipeline: `--match dense` is part of the pipeline (it was
    dropped from the key, so plain SparseGPT's v1 value sat beside SparseGPT + match under v2)."""
    import smollm

    v1 = [dict(_row("sparsegpt", "50%", 1.0), protocol="v1", ppl=49.16),
          dict(_row("wanda", "50%", 1.0), protocol="v1", ppl=60.0)]
    v2 = [_row("sparsegpt", "50%", 1.05), _row("sparsegpt", "50%", 0.98, match="dense", match_strength=0.25),
          _row("wanda", "50%", 1.1)]
    lines = {ln.split("|")[2].strip(): ln.split("|") for ln in smollm.changes_table(v1, v2).splitlines()
             if ln.startswith("| 50%")}
    assert set(lines) == {"sparsegpt", "wanda"}  # the match row has no v1 counterpart
    assert lines["sparsegpt"][4].strip() == "49.16"
    assert lines["sparsegpt"][6].strip() == f"{v2[0]['ppl']:.2f}"


def test_changes_table_orders_v2_rows_over_common_windows_and_marks_unresolved_steps():
    import smollm

    v1 = [dict(_row(m, "50%", 1.0), protocol="v1", ppl=p) for m, p in (("sparsegpt", 49.0), ("wanda", 60.0), ("ria", 64.0))]
    gpt, wanda, ria = _row("sparsegpt", "50%", 1.0), _row("wanda", "50%", 1.1), _row("ria", "50%", 1.1)
    gpt["wikitext"] = {**gpt["wikitext"], "nll": gpt["wikitext"]["nll"] + [50.0 * 511] * 467, "ppl": 9e9}  # whole set
    noise, _ = _sample(128, 11)
    ria["wikitext"] = {**ria["wikitext"], "nll": [a + float(e) - 3.0 * 511 for a, e in zip(ria["wikitext"]["nll"], noise)]}
    note = next(ln for ln in smollm.changes_table(v1, [gpt, wanda, ria]).splitlines() if ln.startswith("- 50%"))
    v2_order = note.split("v2 order ")[1]
    assert v2_order.startswith("sparsegpt < ")  # its first 128 windows are the easiest: first, despite ppl 9e9
    assert ("wanda ≲ ria" in v2_order) or ("ria ≲ wanda" in v2_order)  # equal up to noise: not resolved


def test_changes_table_checks_each_v1_claim_against_sparsegpt_on_both_texts():
    """A v1 row below SparseGPT is re-checked under v2 on WikiText and out of domain: lower on one text and higher on
    the other reads 'holds' and 'reversed'."""
    import smollm

    v1 = [dict(_row("sparsegpt", "2:4", 1.0), protocol="v1", ppl=80.8), dict(_row("sparseswaps", "2:4", 1.0), protocol="v1", ppl=76.6)]
    gpt, swaps = _row("sparsegpt", "2:4", 1.0), _row("sparseswaps", "2:4", 0.97)
    worse = _row("sparseswaps", "2:4", 1.03)["heldout"]
    swaps["heldout"] = worse
    md = smollm.changes_table(v1, [gpt, swaps])
    claim = next(ln for ln in md.splitlines() if ln.strip().startswith("- v1: sparseswaps below SparseGPT"))
    assert "WikiText -" in claim and claim.index("holds") < claim.index("english-heldout +")
    assert claim.endswith("**reversed**")


def test_the_dense_reference_is_not_scored_again_for_a_request_it_covers():
    """A zero-shot-only or perplexity-only rescore of a mask asks less than the dense row already holds: the grid
    must not spend a dense scoring on it; a larger request (more windows, the whole sets) must."""
    import smollm
    from protocol import EvalConfig

    have = {"wikitext_windows": 128, "heldout_windows": 128, "tune": True, "zeroshot": True, "zeroshot_limit": 500}
    assert smollm.covers(have, EvalConfig(128, 128, zeroshot=False))
    assert smollm.covers(have, EvalConfig(-1, -1, zeroshot=True, zeroshot_limit=500))
    assert smollm.covers(have, EvalConfig(64, -1, tune=False, zeroshot=True, zeroshot_limit=100))
    assert not smollm.covers(have, EvalConfig(0, 128, zeroshot=False))  # the whole test set
    assert not smollm.covers(have, EvalConfig(256, 128, zeroshot=False))
    assert not smollm.covers(have, EvalConfig(-1, -1, zeroshot=True, zeroshot_limit=None))  # whole zero-shot sets
    assert not smollm.covers({**have, "tune": False}, EvalConfig(-1, -1, zeroshot=False))
    whole = {"wikitext_windows": 0, "heldout_windows": 0, "tune": True, "zeroshot": False}
    assert smollm.covers(whole, EvalConfig(0, 0, zeroshot=False)) and smollm.covers(whole, EvalConfig(128, 5, zeroshot=False))
    assert not smollm.covers(whole, EvalConfig(0, 0, zeroshot=True, zeroshot_limit=500))


@needs_shared
def test_tasks_table_opens_with_the_random_guess_floor_at_the_rows_limit():
    """The floor is computed on the documents the rows scored (their limit), shown before every model row."""
    import smollm

    z = {"limit": 500, "mean_acc": 0.39, "mean_acc_norm": 0.41,
         "tasks": {"boolq": {"acc": 0.38}, "hellaswag": {"acc": 0.3, "acc_norm": 0.35}}}
    rows = [_row("dense", "–", 0.8, zeroshot=z), _row("wanda", "50%", 1.0)]  # wanda: no zero-shot, no line
    chance = smollm.chance_rows(rows)
    assert [c["zeroshot"]["limit"] for c in chance] == [500]
    lines = smollm.tasks_table_v2(rows, chance).splitlines()
    assert len(lines) == 4 and "*random guess (expected)*" in lines[2] and "| dense |" in lines[3]
    cells = [c.strip() for c in lines[2].split("|")]
    assert cells[5] == "50.0" and cells[7] == "25.0" and cells[-3] == cells[-2] == "35.72"


def test_a_pruning_from_another_calibration_seed_is_another_mask_and_row_kept_out_of_the_scoreboard(monkeypatch):
    """--calib-seed: its own mask folder and row key (the seed-0 mask is never reused for it nor merged with it),
    and the parent refuses to write such rows into the scoreboard's results."""
    import argparse

    import smollm

    a = argparse.Namespace(model="smollm", method="alps", setting="50%", allocation="uniform", refit=["no"],
                           nsamples=128, seqlen=256, protocol="v2", match="dense", match_strength=0.25, calib_seed=0)
    seed0 = smollm.mask_cache(a)
    a.calib_seed = 2
    assert smollm.mask_cache(a).name == seed0.name + "-seed2"
    r0 = _row("alps", "50%", 1.0)
    assert smollm.row_key({**r0, "calib_seed": 2}) != smollm.row_key(r0)
    assert len(smollm.pick_rows([r0, {**_row("alps", "50%", 1.1), "calib_seed": 2}])) == 2  # two masks, not merged
    assert smollm.mask_label({**r0, "calib_seed": 2}) == "alps [calibration seed 2]" and smollm.mask_label(r0) == "alps"
    monkeypatch.setattr(sys, "argv", ["smollm.py", "--calib-seed", "2", "--settings", "50%", "--methods", "alps"])
    with pytest.raises(SystemExit, match="another --name"):
        smollm.main()


def test_the_tuning_table_keeps_prunings_of_other_calibration_seeds_apart():
    """One row per calibration seed (a seed-1 pruning was shown in place of seed 0, seed 2 dropped), its match=dense
    difference taken against the pruned-match row of the same seed, and a void timing shown as such."""
    import smollm

    def tuned(seed, scale, match=None, **kw):
        r = _row("alps", "2:4", scale, prune_seconds=100.0 + seed, **kw)
        r["tune"] = r["wikitext"]
        r.update({"calib_seed": seed} if seed else {})
        r.update({"match": "dense", "match_strength": 0.25} if match else {})
        return r

    rows = [tuned(0, 1.0, True), tuned(1, 1.02, True, timing_invalid="resumed"), tuned(2, 1.04, True), tuned(2, 1.1)]
    lines = smollm.table_tune(rows).splitlines()[2:]
    assert len(lines) == 4
    labels = [line.split("|")[2].strip() for line in lines]
    assert labels == ["alps", "alps [calibration seed 1]", "alps [calibration seed 2]", "alps [calibration seed 2]"]
    cells = [[c.strip() for c in line.split("|")] for line in lines]
    assert cells[1][-2] == "– (stopped)" and cells[0][-2] == "100" and cells[2][-2] == "102"
    assert cells[2][6] != "–" and cells[0][6] == cells[1][6] == "–"  # seed 2 has its pruned-match row; 0 and 1 none


def test_the_scoreboard_table_renders_a_row_scored_on_the_tuning_text_alone():
    """A --tune-only row (no WikiText, no heldout) beside a dense row: its cells are "–", not a KeyError."""
    import smollm

    tuned = _row("sparsegpt", "2:4", 1.0, calib_seed=1, eval_tag="W– H– T Z–")
    tuned["tune"] = tuned.pop("wikitext")
    del tuned["heldout"]
    (line,) = [ln for ln in smollm.table_v2([_row("dense", "–", 0.8), tuned]).splitlines() if "seed 1" in ln]
    cells = [c.strip() for c in line.split("|")]
    assert cells[4:9] == ["–"] * 5 and cells[9] == f"{tuned['tune']['ppl']:.2f}"


def test_a_tune_only_run_into_a_file_with_fuller_rows_writes_its_table_beside_that_files_own(tmp_path, monkeypatch):
    """--tune-only rebuilds the tuning table; into a file whose rows are scored beyond the tuning text it goes to
    <name>-tune.md and leaves <name>.md (that file's own, fuller table) untouched; a tuning-only file gets <name>.md."""
    import json

    import smollm

    monkeypatch.setattr(smollm, "RESULTS", tmp_path)

    def tuned(seed, scale, scored):
        r = _row("alps", "2:4", scale, calib_seed=seed, match="dense", match_strength=0.25)
        r["tune"] = r["wikitext"]
        if not scored:
            r["eval"] = {"wikitext_windows": -1}
            del r["wikitext"], r["heldout"]
        return r

    for name, scored in (("full", True), ("tuneonly", False)):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(tuned(s, 1 + s / 50, scored and s == 1)) + "\n"
                                                        for s in (1, 2)))
        (tmp_path / f"{name}.md").write_text("the file's own table\n")
        monkeypatch.setattr(sys, "argv", ["smollm.py", "--name", name, "--tune-only", "--table"])
        smollm.main()
    assert (tmp_path / "full.md").read_text() == "the file's own table\n"
    assert "calibration seed 2" in (tmp_path / "full-tune.md").read_text()
    assert "calibration seed 2" in (tmp_path / "tuneonly.md").read_text()
    assert not (tmp_path / "tuneonly-tune.md").exists()
