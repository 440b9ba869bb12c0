"""Where the default model and texts live: ``../shared`` beside the project (or $MASKOPT_SHARED)."""
from __future__ import annotations

import os
from pathlib import Path


class SharedMissingError(FileNotFoundError):
    pass


def shared_dir(required: bool = True) -> Path | None:
    candidates = []
    if os.environ.get("MASKOPT_SHARED"):
        candidates.append(Path(os.environ["MASKOPT_SHARED"]))
    candidates += [Path.cwd() / ".." / "shared", Path(__file__).resolve().parents[2] / "shared"]
    for c in candidates:
        if (c / "models").is_dir():
            return c.resolve()
    if required:
        raise SharedMissingError(
            "no model given and the shared folder with the default model (../shared/models/maskopt-tiny-llama) "
            "was not found. Pass a model explicitly, e.g. `maskopt prune PATH_OR_HUB_ID --calib TEXT_FILE`, "
            "or set MASKOPT_SHARED to the folder holding models/ and data/."
        )
    return None


def default_model() -> Path:
    return shared_dir() / "models" / "maskopt-tiny-llama"


def default_calib() -> Path:
    return shared_dir() / "data" / "english-calib" / "calib.txt"


def default_eval_texts() -> list[Path]:
    s = shared_dir()
    return [s / "data" / "english-heldout" / "test.txt", s / "data" / "wikitext-2-raw" / "test.txt"]
