"""Zero-shot evaluation through lm-eval on local task files; accuracy checked against a direct computation."""
import json

import pytest
import torch
from conftest import mc_task, tiny_model, tiny_tokenizer

from maskopt.zeroshot import TaskDataError, build_tasks, zero_shot

DOCS = [{"question": "w1 w2 w3", "choices": ["w4 w5", "w6", "w7 w8 w9"], "label": 0},
        {"question": "w10 w11", "choices": ["w12", "w13 w14", "w15"], "label": 2},
        {"question": "w16 w17 w18 w19", "choices": ["w20 w21", "w22", "w23"], "label": 1},
        {"question": "w24", "choices": ["w25", "w26", "w27 w28"], "label": 1},
        {"question": "w29 w30", "choices": ["w31", "w32 w33", "w34"], "label": 0}]


@pytest.fixture
def task_dir(tmp_path):
    return mc_task(tmp_path, "tiny_mc", DOCS)


@torch.no_grad()
def direct_accuracy(model, tok, docs) -> float:
    """argmax over choices of log p(" " + choice | question), summed over the choice tokens."""
    right = 0
    for d in docs:
        ctx = tok(d["question"], add_special_tokens=False)["input_ids"]
        scores = []
        for c in d["choices"]:
            cont = tok(" " + c, add_special_tokens=False)["input_ids"]
            ids = torch.tensor([ctx + cont])
            logp = torch.log_softmax(model(ids).logits[0, :-1].double(), -1)
            scores.append(float(logp[len(ctx) - 1 :].gather(1, torch.tensor(cont)[:, None]).sum()))
        right += int(max(range(len(scores)), key=scores.__getitem__) == d["label"])
    return right / len(docs)


def test_local_task_matches_direct_accuracy(task_dir):
    tok = tiny_tokenizer()
    for seed in (0, 1):
        model = tiny_model("llama", seed=seed)
        res = zero_shot(model, tok, ["tiny_mc"], include_path=task_dir, batch_size=2)
        assert res["tiny_mc"]["acc"] == pytest.approx(direct_accuracy(model, tok, DOCS))


def test_bundled_task_reads_a_local_file(tmp_path):
    data = tmp_path / "boolq.jsonl"
    data.write_text("".join(json.dumps({"passage": f"w{i} w{i + 1}", "question": f"w{i + 2}", "label": i % 2,
                                        "idx": i}) + "\n" for i in range(6)))
    res = zero_shot(tiny_model("llama"), tiny_tokenizer(), ["boolq"], task_data={"boolq": data})
    assert 0.0 <= res["boolq"]["acc"] <= 1.0
    _, specs = build_tasks(["boolq"], task_data={"boolq": data})
    assert specs[0]["dataset_path"] == "json" and specs[0]["doc_to_choice"] == ["no", "yes"]


def test_hub_tasks_and_bad_input_are_clear_errors(tmp_path):
    with pytest.raises(TaskDataError, match="hub"):
        build_tasks(["arc_easy"])
    with pytest.raises(TaskDataError, match="does not exist"):
        build_tasks(["arc_easy"], task_data={"arc_easy": tmp_path / "none.jsonl"})
    with pytest.raises(TaskDataError, match="not in --tasks"):
        build_tasks(["rte"], task_data={"boolq": tmp_path / "x.jsonl"})
    with pytest.raises(TaskDataError, match="does not exist"):
        build_tasks(["tiny_mc"], include_path=tmp_path / "nowhere")


def test_per_document_scores_match_the_task_accuracy(task_dir):
    """return_docs: one score per document, ordered by doc_id, whose mean is lm-eval's acc and whose entries are
    the direct argmax answers."""
    tok = tiny_tokenizer()
    model = tiny_model("llama", seed=1)
    res, docs = zero_shot(model, tok, ["tiny_mc"], include_path=task_dir, batch_size=2, return_docs=True)
    d = docs["tiny_mc"]
    assert d["doc_id"] == list(range(len(DOCS)))
    assert sum(d["acc"]) / len(d["acc"]) == pytest.approx(res["tiny_mc"]["acc"])
    assert d["acc"] == [direct_accuracy(model, tok, [doc]) for doc in DOCS]
