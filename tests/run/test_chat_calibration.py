"""Chat-formatted calibration: {"messages": [...]} lines rendered with the tokenizer's chat template."""
from __future__ import annotations

import json

import pytest
import torch

from conftest import random_text, tiny_model, tiny_tokenizer

TEMPLATE = "{% for m in messages %}<eos> {{ m['role'] }} {{ m['content'] }}{% endfor %}"


def _chats(path, n=40):
    words = random_text(40 * n).split()
    with open(path, "w") as f:
        for i in range(n):
            f.write(json.dumps({"messages": [{"role": "user", "content": " ".join(words[40 * i: 40 * i + 20])},
                                             {"role": "assistant", "content": " ".join(words[40 * i + 20: 40 * i + 40])}]})
                    + "\n")
    return path


def test_chat_lines_are_the_rendered_conversations(tmp_path):
    from maskopt.data import make_windows

    tok = tiny_tokenizer()
    tok.chat_template = TEMPLATE
    path = _chats(tmp_path / "chat.jsonl")
    rendered = "".join(tok.apply_chat_template(json.loads(line)["messages"], tokenize=False)
                       for line in path.read_text().splitlines())
    (tmp_path / "rendered.txt").write_text(rendered)
    model = tiny_model("llama")
    a = make_windows([str(path)], tok, model, 8, 16, 0)
    b = make_windows([str(tmp_path / "rendered.txt")], tok, model, 8, 16, 0)
    assert torch.equal(a, b)
    assert (a == tok.convert_tokens_to_ids("<eos>")).any()  # the template's own tokens are in the windows


def test_text_lines_mixed_files_and_clear_errors(tmp_path):
    from maskopt.data import DataError, calibration_text

    tok = tiny_tokenizer()
    (tmp_path / "t.jsonl").write_text(json.dumps({"text": "w1 w2"}) + "\n" + json.dumps({"text": " w3"}) + "\n")
    assert calibration_text([str(tmp_path / "t.jsonl")], tok) == "w1 w2 w3"
    chat = _chats(tmp_path / "chat.jsonl", 2)
    with pytest.raises(DataError, match="no chat template"):
        calibration_text([str(chat)], tok)
    tok.chat_template = TEMPLATE
    for bad, says in (('{"messages": []}', "non-empty list"), ("[1, 2]", "'messages' (a chat) or 'text'"),
                      ("{nope", "not a JSON object")):
        (tmp_path / "bad.jsonl").write_text(bad + "\n")
        with pytest.raises(DataError, match=says.replace("(", r"\(").replace(")", r"\)")):
            calibration_text([str(tmp_path / "bad.jsonl")], tok)


def test_prune_with_chat_calibration(tmp_path):
    from typer.testing import CliRunner

    from maskopt.cli import app

    model = tiny_model("llama")
    model.save_pretrained(tmp_path / "m")
    tok = tiny_tokenizer()
    tok.chat_template = TEMPLATE
    tok.save_pretrained(tmp_path / "m")
    r = CliRunner().invoke(app, ["prune", str(tmp_path / "m"), "--calib", str(_chats(tmp_path / "chat.jsonl")),
                                 "--nsamples", "8", "--seqlen", "16", "-q", "--no-eval", "--out", str(tmp_path / "o")])
    assert r.exit_code == 0, r.output
