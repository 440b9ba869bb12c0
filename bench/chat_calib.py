"""A chat-formatted calibration file from text already in ../shared (no downloads): WikiText-2 `valid.txt`, first
90% only (the calibration split of the scoreboard protocol; the last 10% is the tuning text), cut into articles'
paragraphs, each turned into one conversation ``{"messages": [user: "Continue this text: <opening>",
assistant: "<the rest>"]}``. `maskopt prune --calib FILE.jsonl` renders them with the model's chat template.

    .venv/bin/python bench/chat_calib.py --out ~/.cache/maskopt/chat-calib.jsonl
"""
from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from common import SHARED


def paragraphs(text: str, min_words: int = 60) -> list[str]:
    out = []
    for para in re.split(r"\n\s*\n", text):
        para = " ".join(para.split())
        if para.startswith("=") or len(para.split()) < min_words:  # headings and fragments
            continue
        out.append(para)
    return out


def conversation(para: str) -> dict:
    words = para.split()
    cut = max(12, len(words) // 4)
    return {"messages": [{"role": "user", "content": "Continue this text: " + " ".join(words[:cut])},
                         {"role": "assistant", "content": " ".join(words[cut:])}]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--source", type=Path, default=SHARED / "data" / "wikitext-2" / "valid.txt")
    ap.add_argument("--fraction", type=float, default=0.9, help="the leading share of the text used (calibration split)")
    a = ap.parse_args()
    text = a.source.read_text()
    paras = paragraphs(text[: int(a.fraction * len(text))])
    a.out.parent.mkdir(parents=True, exist_ok=True)
    with open(a.out, "w") as f:
        for p in paras:
            f.write(json.dumps(conversation(p)) + "\n")
    print(f"{len(paras)} conversations written to {a.out}")


if __name__ == "__main__":
    main()
