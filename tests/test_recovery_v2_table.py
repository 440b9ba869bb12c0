"""bench/recovery_v2.py's table: a recovered row's gap closed is measured against its own mask's unrecovered row,
also for a mask pruned again whose scores live in a rescoring file and a zero-shot file (not the scoreboard)."""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import recovery_v2  # noqa: E402


def _scores(w, h, t):
    return {k: {"ppl": v, "lo": v - 1, "hi": v + 1} for k, v in (("wikitext", w), ("heldout", h), ("tune", t))}


def test_a_rerun_masks_gaps_are_taken_against_its_own_unrecovered_scores(tmp_path, monkeypatch):
    monkeypatch.setattr(recovery_v2, "RESULTS", tmp_path)
    monkeypatch.setattr(recovery_v2, "V2_ROWS", tmp_path / "smollm_v2.jsonl")
    base = {"protocol": "v2", "recover": "none", "allocation": "uniform", "eval_tag": "W128 H128 T Z–"}
    scoreboard = [{**base, "method": "dense", "setting": "–", **_scores(30.0, 40.0, 31.0)},
                  {**base, "method": "alps", "setting": "50%", "match": "dense", "match_strength": 0.25,
                   **_scores(50.0, 80.0, 41.0)}]
    (tmp_path / "smollm_v2.jsonl").write_text("".join(json.dumps(r) + "\n" for r in scoreboard))
    ppl_file, zs_file = recovery_v2.RERUNS["alps-match-50-rerun"]
    (tmp_path / ppl_file).write_text(json.dumps({"protocol": "v2", "eval_tag": "W128 H128 T Z–", **_scores(40.0, 60.0, 39.0)}))
    (tmp_path / zs_file).parent.mkdir(parents=True)
    (tmp_path / zs_file).write_text(json.dumps({"limit": 500, "mean_acc": 0.36, "mean_acc_stderr": 0.01}))
    recovered = [{"mask": m, "objective": "kd", "recover": "full:lr=5e-4", "data": "wiki:128", "level": "ppl",
                  "key": recovery_v2.config_key(m, "kd", "full:lr=5e-4", "wiki:128"), "eval_tag": "W128 H128 T Z–",
                  **_scores(35.0, 50.0, 35.0)} for m in ("alps-match-50", "alps-match-50-rerun")]
    lines = {ln.split("|")[1].strip() + ln.split("|")[3].strip(): [c.strip() for c in ln.split("|")]
             for ln in recovery_v2.table(recovered).splitlines()[2:]}
    assert lines["alps-match-50-rerunnone"][9] == "36.00 ± 1.96 (500)"  # its zero-shot file
    assert lines["alps-match-50-rerunnone"][5] == "W128 H128 T Z500"
    # (pruned − recovered) / (pruned − dense): 50/80 for the scoreboard's pruning, 40/60 for the one pruned again
    assert lines["alps-match-50full:lr=5e-4"][10].startswith("75% / 75%")
    assert lines["alps-match-50-rerunfull:lr=5e-4"][10].startswith("50% / 50%")


def test_a_rerun_scored_on_the_tuning_text_only_has_a_tune_row_and_no_zero_shot(tmp_path, monkeypatch):
    monkeypatch.setattr(recovery_v2, "RESULTS", tmp_path)
    monkeypatch.setattr(recovery_v2, "V2_ROWS", tmp_path / "smollm_v2.jsonl")
    (tmp_path / "smollm_v2.jsonl").write_text("")
    ppl_file, _ = recovery_v2.RERUNS["wanda-50-rerun"]
    (tmp_path / ppl_file).write_text(json.dumps({"protocol": "v2", "eval_tag": "W– H– T Z–",
                                                 "tune": {"ppl": 59.0, "lo": 58.0, "hi": 60.0}}))
    rows = [r for r in recovery_v2.v2_reference_rows() if r["mask"] == "wanda-50-rerun"]
    assert [r["level"] for r in rows] == ["tune"]
    recovered = [{"mask": "wanda-50-rerun", "objective": "lm", "recover": "matrix", "data": "wiki:128", "level": "tune",
                  "key": recovery_v2.config_key("wanda-50-rerun", "lm", "matrix", "wiki:128"), "eval_tag": "W– H– T Z–",
                  "tune": {"ppl": 55.0, "lo": 54.0, "hi": 56.0}}]
    lines = {ln.split("|")[1].strip() + ln.split("|")[3].strip(): [c.strip() for c in ln.split("|")]
             for ln in recovery_v2.table(recovered).splitlines()[2:]}
    assert lines["wanda-50-rerunnone"][8] == "59.00" and lines["wanda-50-rerunnone"][9] == "–"
