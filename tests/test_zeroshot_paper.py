"""The seven paper tasks from their local files (`--tasks paper`), means over tasks, and standard errors."""
import json
import math

import pytest
import torch
from conftest import SHARED, mc_task, needs_shared, tiny_model, tiny_tokenizer

from maskopt.zeroshot import (PAPER_TASKS, TaskDataError, default_task_data, expand_tasks, mean_accuracy,
                              zero_shot)

pytestmark = pytest.mark.usefixtures("one_thread")


@needs_shared
def test_paper_alias_maps_the_seven_local_files():
    names, data = expand_tasks(["paper"])
    assert names == list(PAPER_TASKS)
    assert {t: p.name for t, p in data.items()} == {t: f"{t}.validation.jsonl" for t in PAPER_TASKS}
    assert all(p.parent.resolve() == (SHARED / "data" / "zeroshot").resolve() for p in data.values())
    names, data = expand_tasks(["boolq", "paper"], {"boolq": "mine.jsonl"})  # an explicit file wins, no duplicates
    assert names == list(PAPER_TASKS) and data["boolq"] == "mine.jsonl"
    assert expand_tasks(["arc_easy"]) == (["arc_easy"], {})  # without the alias nothing is guessed


def test_missing_default_folder_names_the_way_out(tmp_path, monkeypatch):
    monkeypatch.setenv("MASKOPT_ZEROSHOT_DATA", str(tmp_path))
    with pytest.raises(TaskDataError, match="MASKOPT_ZEROSHOT_DATA"):
        expand_tasks(["paper"])
    with pytest.raises(TaskDataError, match="no local default"):
        default_task_data(["lambada"])


def test_mean_accuracy_and_its_standard_error():
    res = {"boolq": {"acc": 0.6, "acc_stderr": 0.03}, "hellaswag": {"acc": 0.3, "acc_norm": 0.4,
           "acc_stderr": 0.04, "acc_norm_stderr": 0.05}}
    m = mean_accuracy(res)
    assert m["mean_acc"] == pytest.approx(0.45) and m["mean_acc_norm"] == pytest.approx(0.5)
    assert m["mean_acc_stderr"] == pytest.approx(math.sqrt(0.03 ** 2 + 0.04 ** 2) / 2)
    assert m["mean_acc_norm_stderr"] == pytest.approx(math.sqrt(0.03 ** 2 + 0.05 ** 2) / 2)
    assert "mean_acc_stderr" not in mean_accuracy({"a": {"acc": 0.5}})


def test_local_task_reports_the_binomial_standard_error(tmp_path):
    docs = [{"question": f"w{i} w{i + 1}", "choices": [f"w{i + 2}", f"w{i + 3} w{i + 4}", "w5"], "label": i % 3}
            for i in range(10)]
    mc_task(tmp_path, "mc10", docs)
    with torch.no_grad():
        res = zero_shot(tiny_model("llama"), tiny_tokenizer(), ["mc10"], include_path=tmp_path, batch_size=4)
    p, n = res["mc10"]["acc"], len(docs)
    assert res["mc10"]["acc_stderr"] == pytest.approx(math.sqrt(p * (1 - p) / (n - 1)))  # sample sd / √n


def test_chance_accuracy_is_the_mean_inverse_choice_count_of_the_scored_documents(tmp_path):
    """ARC documents with 3, 4 and 5 choices: uniform guessing expects (1/3 + 1/4 + 1/5) / 3, and with limit 2
    only the first two documents (the ones lm-eval would score) count."""
    from maskopt.zeroshot import chance_accuracy

    docs = [{"id": str(i), "question": f"q{i}", "answerKey": "A",
             "choices": {"text": [f"c{j}" for j in range(k)], "label": "ABCDE"[:k]}} for i, k in enumerate((3, 4, 5))]
    data = tmp_path / "arc.jsonl"
    data.write_text("".join(json.dumps(d) + "\n" for d in docs))
    res = chance_accuracy(["arc_easy"], task_data={"arc_easy": data})
    assert res["tasks"]["arc_easy"]["acc"] == pytest.approx((1 / 3 + 1 / 4 + 1 / 5) / 3)
    assert res["tasks"]["arc_easy"]["docs"] == 3 and res["mean_acc"] == res["tasks"]["arc_easy"]["acc"]
    two = chance_accuracy(["arc_easy"], task_data={"arc_easy": data}, limit=2)
    assert two["tasks"]["arc_easy"]["acc"] == pytest.approx((1 / 3 + 1 / 4) / 2) and two["limit"] == 2


@needs_shared
def test_chance_accuracy_of_the_seven_paper_tasks():
    from maskopt.zeroshot import chance_accuracy

    res = chance_accuracy(["paper"], limit=500)
    acc = {t: r["acc"] for t, r in res["tasks"].items()}
    assert set(acc) == set(PAPER_TASKS)
    assert acc["boolq"] == acc["rte"] == acc["winogrande"] == 0.5 and acc["hellaswag"] == acc["openbookqa"] == 0.25
    assert res["tasks"]["arc_challenge"]["docs"] == 299 and res["tasks"]["hellaswag"]["docs"] == 500
    assert 0.35 < res["mean_acc"] < 0.36
