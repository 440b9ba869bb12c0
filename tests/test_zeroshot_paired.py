"""Paired zero-shot comparison (maskopt.zeroshot.paired_accuracy): closed-form cases and its refusals."""
import sys
from pathlib import Path

import pytest
from conftest import TINY_LLAMA, needs_shared
from hypothesis import given, settings
from hypothesis import strategies as st

from maskopt.zeroshot import paired_accuracy, pipeline_accuracy

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))


def _docs(**tasks):
    return {t: {"doc_id": list(range(len(v))), "acc": [float(x) for x in v]} for t, v in tasks.items()}


def test_identical_models_differ_by_exactly_zero():
    a = _docs(boolq=[1, 0, 1, 1], rte=[0, 0, 1])
    r = paired_accuracy(a, a)
    assert r["diff"] == 0.0 and r["lo"] == 0.0 and r["hi"] == 0.0 and r["p_a_higher"] == 0.0


def test_a_model_right_wherever_the_other_is_wrong_wins_with_the_whole_interval():
    a = _docs(boolq=[1] * 20, rte=[1] * 10)
    b = _docs(boolq=[0] * 20, rte=[1] * 5 + [0] * 5)
    r = paired_accuracy(a, b, n_boot=500)
    assert r["diff"] == pytest.approx((1.0 + 0.5) / 2)  # mean over tasks, not over documents
    assert r["per_task"] == {"boolq": 1.0, "rte": 0.5}
    assert 0 < r["lo"] <= r["diff"] <= r["hi"] <= 1.0 and r["p_a_higher"] == 1.0


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.booleans()), min_size=3, max_size=40), st.integers(0, 5))
def test_swapping_the_models_mirrors_the_interval(pairs, seed):
    a = _docs(t=[x for x, _ in pairs])
    b = _docs(t=[y for _, y in pairs])
    ab, ba = paired_accuracy(a, b, seed=seed, n_boot=300), paired_accuracy(b, a, seed=seed, n_boot=300)
    assert ab["diff"] == pytest.approx(-ba["diff"])
    assert ab["lo"] == pytest.approx(-ba["hi"]) and ab["hi"] == pytest.approx(-ba["lo"])


def test_acc_norm_falls_back_to_acc_per_task():
    a = {"hellaswag": {"doc_id": [0, 1], "acc": [0.0, 0.0], "acc_norm": [1.0, 1.0]},
         "boolq": {"doc_id": [0, 1], "acc": [1.0, 0.0]}}
    b = {"hellaswag": {"doc_id": [0, 1], "acc": [0.0, 0.0], "acc_norm": [0.0, 0.0]},
         "boolq": {"doc_id": [0, 1], "acc": [0.0, 0.0]}}
    assert paired_accuracy(a, b, "acc_norm")["per_task"] == {"hellaswag": 1.0, "boolq": 0.5}


def test_different_documents_or_tasks_are_refused():
    a = _docs(boolq=[1, 0, 1])
    with pytest.raises(ValueError, match="same tasks"):
        paired_accuracy(a, _docs(rte=[1, 0, 1]))
    with pytest.raises(ValueError, match="different documents"):
        paired_accuracy(a, _docs(boolq=[1, 0]))
    with pytest.raises(ValueError, match="level"):
        paired_accuracy(a, a, level=1.5)


def _scoring(label, folder, **tasks):
    """A zeroshot_paired scoring record: per task its documents' acc and the task means."""
    docs = _docs(**tasks)
    res = {t: {"acc": sum(v["acc"]) / len(v["acc"]), "acc_stderr": 0.01} for t, v in docs.items()}
    return {"label": label, "folder": folder, "limit": 2, "tasks": res, "docs": docs, "seconds": 1.0}


def _bench_module():
    import zeroshot_paired
    return zeroshot_paired


def test_extending_a_scoring_replaces_the_rescored_tasks_and_keeps_the_others():
    zp = _bench_module()
    base = _scoring("m-500", "/m", boolq=[1, 0], rte=[1, 1, 0])
    new = _scoring("m-all", "/m", boolq=[1, 0, 0, 0])  # the whole set: the first two documents answered alike
    out = zp.extend(base, new, {"boolq": 4, "rte": 3})
    assert out["docs"]["boolq"]["acc"] == [1.0, 0.0, 0.0, 0.0] and out["docs"]["rte"] == base["docs"]["rte"]
    assert out["tasks"]["boolq"]["acc"] == 0.25 and out["tasks"]["rte"]["acc"] == pytest.approx(2 / 3)
    assert out["mean_acc"] == pytest.approx((0.25 + 2 / 3) / 2)  # recomputed over the merged tasks
    assert out["limit"] == "all" and out["counts"] == {"boolq": 4, "rte": 3} and out["extend_agree"] == {"boolq": 1.0}
    assert zp.extend(base, new, {"boolq": 4, "rte": 9})["limit"] == "all but rte 3 of 9"


def test_extending_is_refused_for_another_model_or_folder():
    zp = _bench_module()
    base = _scoring("m-500", "/m", boolq=[1, 0] * 100)
    other = _scoring("x", "/m", boolq=[0, 1] * 100 + [1])  # disagrees on the documents both hold
    with pytest.raises(ValueError, match="same model"):
        zp.extend(base, other, {"boolq": 201})
    with pytest.raises(ValueError, match="same folder"):
        zp.extend(base, _scoring("y", "/elsewhere", boolq=[1, 0] * 100 + [1]), {"boolq": 201})
    with pytest.raises(ValueError, match="no task"):
        zp.extend(base, _scoring("z", "/m", rte=[1]), {"boolq": 200, "rte": 1})


@needs_shared
def test_rescoring_one_paper_task_on_more_documents_extends_an_earlier_scoring(tmp_path, monkeypatch):
    """End to end on the tiny model: the seven tasks on 2 documents, then RTE alone on 3 (it reads its local file,
    not the hub) merged with the other six; the first two RTE documents get the same answers both times."""
    zp = _bench_module()
    monkeypatch.setattr(zp, "DOCS", tmp_path)
    zp.score(str(TINY_LLAMA), "base", 2, 1)
    out = zp.score(str(TINY_LLAMA), "more", 3, 1, ["rte"], "base")
    assert out["counts"]["rte"] == 3 and all(n == 2 for t, n in out["counts"].items() if t != "rte")
    assert out["extend_agree"] == {"rte": 1.0} and out["extends"] == "base"
    assert out["limit"].startswith("all but boolq 2 of 3270, rte 3 of 277, hellaswag 2 of 10042")
    assert (tmp_path / "more.json").is_file()
    with pytest.raises(SystemExit, match="go together"):
        zp.score(str(TINY_LLAMA), "x", 3, 1, ["rte"], None)


def test_compare_without_a_task_drops_it_from_both_means_and_the_bootstrap(tmp_path, monkeypatch):
    """A wins BoolQ outright and loses RTE outright: over both tasks Δ = 0; without BoolQ, Δ = RTE's −1 with the
    whole interval below 0, the means are RTE's alone, and the table row says which task was left out."""
    import json
    zp = _bench_module()
    monkeypatch.setattr(zp, "DOCS", tmp_path)
    monkeypatch.setattr(zp, "JSONL", tmp_path / "paired.jsonl")
    monkeypatch.setattr(zp, "write_md", lambda name, lines: "\n".join(lines))
    a = _scoring("a", "/a", boolq=[1] * 10, rte=[0] * 10)
    b = _scoring("b", "/b", boolq=[0] * 10, rte=[1] * 10)
    for r in (a, b):
        (tmp_path / f"{r['label']}.json").write_text(json.dumps(r))
    both = zp.compare("a", "b", 200)
    assert both["acc"]["diff"] == 0.0 and "without" not in both
    assert both["mean_acc_a"] == both["mean_acc_b"] == 0.5
    rte = zp.compare("a", "b", 200, ["boolq"])
    assert rte["acc"]["diff"] == -1.0 and rte["acc"]["hi"] == -1.0 and set(rte["acc"]["per_task"]) == {"rte"}
    assert rte["mean_acc_a"] == 0.0 and rte["mean_acc_b"] == 1.0 and rte["without"] == ["boolq"]
    assert rte["unpaired_half_width"] == pytest.approx(1.96 * (2 * 0.01 ** 2) ** 0.5)  # one task: se_t / 1
    table = zp.write_table()
    assert "| a | b | 2 | 50.00 |" in table and "| a | b | 2 (without boolq) | 0.00 | 100.00 |" in table
    with pytest.raises(SystemExit, match="no task piqa"):
        zp.compare("a", "b", 200, ["piqa"])
    with pytest.raises(SystemExit, match="leaves no task"):
        zp.compare("a", "b", 200, ["boolq", "rte"])


def test_a_pipeline_whose_prunings_disagree_gets_the_interval_of_its_pruning_draws():
    """No document noise (every document of a pruning answered alike): A's two prunings are right everywhere, B's
    one right and one wrong. Δ = 1 − 1/2; each resample draws B's two prunings with replacement, so B's mean is 1,
    1/2 or 0 with probability 1/4, 1/2, 1/4 and the interval is [0, 1], where a single pair would say [½, ½]."""
    ones, zeros = _docs(boolq=[1] * 10, rte=[1] * 5), _docs(boolq=[0] * 10, rte=[0] * 5)
    r = pipeline_accuracy([ones, ones], [ones, zeros], n_boot=4000)
    assert r["diff"] == 0.5 and r["lo"] == 0.0 and r["hi"] == 1.0
    assert r["means_a"] == [1.0, 1.0] and r["means_b"] == [1.0, 0.0]
    assert r["p_a_higher"] == pytest.approx(0.75, abs=0.03)


def test_prunings_paired_by_seed_are_drawn_together():
    """A's and B's i-th prunings alike (paired by their calibration windows): every paired draw gives Δ = 0, while
    unpaired draws of the same four prunings spread over [−1, 1]."""
    ones, zeros = _docs(boolq=[1] * 8), _docs(boolq=[0] * 8)
    paired = pipeline_accuracy([ones, zeros], [ones, zeros], paired_prunings=True, n_boot=500)
    assert paired["diff"] == 0.0 and paired["lo"] == 0.0 and paired["hi"] == 0.0
    loose = pipeline_accuracy([ones, zeros], [ones, zeros], n_boot=2000)
    assert loose["lo"] <= -0.5 and loose["hi"] >= 0.5


@settings(max_examples=20, deadline=None)
@given(st.lists(st.integers(0, 1), min_size=30, max_size=30), st.lists(st.integers(0, 1), min_size=30, max_size=30))
def test_one_pruning_each_is_the_paired_document_bootstrap(x, y):
    """With one pruning per side the two-level bootstrap reduces to the paired one: the same Δ, and the interval
    within the resampling error of paired_accuracy's."""
    a, b = _docs(boolq=x[:20], rte=x[20:]), _docs(boolq=y[:20], rte=y[20:])
    one, ref = pipeline_accuracy([a], [b], n_boot=3000), paired_accuracy(a, b, n_boot=3000)
    assert one["diff"] == pytest.approx(ref["diff"])
    assert one["lo"] == pytest.approx(ref["lo"], abs=0.04) and one["hi"] == pytest.approx(ref["hi"], abs=0.04)


def test_pipeline_accuracy_refuses_mismatched_prunings():
    a = _docs(boolq=[1, 0, 1])
    with pytest.raises(ValueError, match="at least one"):
        pipeline_accuracy([], [a])
    with pytest.raises(ValueError, match="as many on each side"):
        pipeline_accuracy([a, a], [a], paired_prunings=True)
    with pytest.raises(ValueError, match="same tasks"):
        pipeline_accuracy([a], [_docs(rte=[1, 0, 1])])
    with pytest.raises(ValueError, match="different documents"):
        pipeline_accuracy([a], [_docs(boolq=[1, 0])])


def test_groups_compares_scorings_of_several_prunings_and_writes_its_table(tmp_path, monkeypatch):
    import json
    zp = _bench_module()
    monkeypatch.setattr(zp, "DOCS", tmp_path)
    monkeypatch.setattr(zp, "GROUPS_JSONL", tmp_path / "groups.jsonl")
    monkeypatch.setattr(zp, "write_md", lambda name, lines: "\n".join(lines))
    for label, v in (("a1", 1), ("a2", 1), ("b1", 1), ("b2", 0)):
        (tmp_path / f"{label}.json").write_text(json.dumps(_scoring(label, "/" + label, boolq=[v] * 6, rte=[1] * 4)))
    row = zp.groups(["a1", "a2"], ["b1", "b2"], 1000, name="A vs B")
    assert row["acc"]["diff"] == 0.25 and row["acc"]["lo"] == 0.0 and row["acc"]["hi"] == 0.5
    without = zp.groups(["a1", "a2"], ["b1", "b2"], 200, ["boolq"], name="A vs B")
    assert without["acc"]["diff"] == 0.0 and without["without"] == ["boolq"]
    table = zp.write_groups_table()
    assert "| A vs B | a1, a2 | b1, b2 | 2 | 100.00 / 100.00 | 100.00 / 50.00 | +25.00 [+0.00, +50.00] |" in table
    assert "| A vs B | a1, a2 | b1, b2 | 2 (without boolq) |" in table
    (tmp_path / "c.json").write_text(json.dumps({**_scoring("c", "/c", boolq=[1] * 6, rte=[1] * 4), "limit": 9}))
    with pytest.raises(SystemExit, match="different limits"):
        zp.groups(["a1", "c"], ["b1"], 100)
