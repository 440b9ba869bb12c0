"""Resumable runs: the state after every finished block, next to the output folder.

Layout of ``<parent>/.<out name>.checkpoint/``:

    state.json                     fingerprint of the run, the stage and block to do next, the report so far,
                                   and the files below that belong to that state (nothing else is read)
    block-<i>-<tag>.safetensors    the state dict of block i as the latest finished stage left it
    model-<tag>.safetensors        the whole model after a stage that changed all of it (e.g. retraining)
    streams-<tag>.safetensors      the hidden states entering the next block (model stream, dense stream)
    masks-<tag>.safetensors        the explicit masks chosen so far (bit-packed)

Every file is written under a fresh name first and state.json last (atomic rename), so a kill at any
moment leaves either the previous or the new state, never a mix. Re-running the same command resumes
from the last finished block and gives bit-identical tensors; a run with different settings (another
fingerprint) refuses the checkpoint instead of resuming from it.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..io import load_masks, save_masks
from ..report import write_json

STATE = "state.json"
VERSION = 1
# Called with (stage, block) right after the checkpoint of a finished block is written (maskopt.testing uses it
# to kill a run at an exact point, as a crash would).
AFTER_BLOCK: list = []


class CheckpointError(RuntimeError):
    pass


@dataclass
class ResumePoint:
    """Where a resumed run continues: stage index, next block, and the saved hidden states."""

    stage: int
    block: int = 0
    hidden: list[torch.Tensor] | None = None
    dense_hidden: list[torch.Tensor] | None = None
    stage_state: dict[str, Any] = field(default_factory=dict)


def location(out: str | Path) -> Path:
    out = Path(out)
    return out.with_name(f".{out.name}.checkpoint")


def _save_tensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    from safetensors.torch import save_file  # noqa: PLC0415

    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.detach().contiguous().cpu().clone() for k, v in tensors.items()}, str(tmp))
    os.replace(tmp, path)


def block_state(self_dir: Path, state: dict, i: int) -> dict[str, torch.Tensor] | None:
    """The saved state dict of block ``i`` (None when the checkpoint holds none)."""
    name = state["files"]["blocks"].get(str(i))
    return _load_tensors(self_dir / name) if name else None


def _load_tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file  # noqa: PLC0415

    return load_file(str(path))


class Checkpoint:
    """The checkpoint folder of one run (identified by ``fingerprint``)."""

    def __init__(self, out: str | Path, fingerprint: str):
        self.dir = location(out)
        self.fingerprint = fingerprint
        self.state: dict[str, Any] = {"version": VERSION, "fingerprint": fingerprint, "stage": 0, "block": 0,
                                      "files": {"blocks": {}, "model": None, "streams": None, "masks": None},
                                      "report": None, "stage_state": {}}
        self._counter = 0

    # ---- reading ------------------------------------------------------------------------
    def load(self) -> dict[str, Any] | None:
        """The saved state of this run, None when there is none; CheckpointError when the folder holds
        another run's checkpoint."""
        p = self.dir / STATE
        if not p.is_file():
            return None
        try:
            state = json.loads(p.read_text())
        except (OSError, ValueError) as e:
            raise CheckpointError(f"checkpoint {self.dir} is unreadable ({e}); pass --no-resume to start over") from None
        if state.get("version") != VERSION or state.get("fingerprint") != self.fingerprint:
            raise CheckpointError(
                f"{self.dir} holds the checkpoint of a run with different settings (model, calibration, stages or "
                "options differ), so it cannot be resumed; pass --no-resume to discard it and start over")
        self.state = state
        self._counter = int(state.get("counter", 0))
        return state

    def restore(self, model: nn.Module, adapter, streamed: bool = False) -> tuple[ResumePoint, dict[str, torch.Tensor]]:
        """Load the saved weights into ``model`` (a streamed run leaves finished blocks here: they are read back
        when the output is written); the resume point and the saved masks."""
        files = self.state["files"]
        if files.get("model"):
            sd = _load_tensors(self.dir / files["model"])
            _load_state(model, sd, "model")
        blocks = adapter.get_blocks(model)
        for i, name in sorted(files["blocks"].items(), key=lambda kv: int(kv[0])) if not streamed else ():
            _load_state(blocks[int(i)], _load_tensors(self.dir / name), f"block {i}")
        masks = load_masks(self.dir / files["masks"]) if files.get("masks") else {}
        for _, name in sorted(files.get("block_masks", {}).items(), key=lambda kv: int(kv[0])):
            masks.update(load_masks(self.dir / name))
        hidden = dense = None
        if files.get("streams"):
            st = _load_tensors(self.dir / files["streams"])
            hidden = [st[f"hidden.{j}"] for j in range(sum(k.startswith("hidden.") for k in st))]
            n_dense = sum(k.startswith("dense.") for k in st)
            dense = [st[f"dense.{j}"] for j in range(n_dense)] if n_dense else None
        point = ResumePoint(self.state["stage"], self.state["block"], hidden, dense, self.state.get("stage_state", {}))
        return point, masks

    # ---- writing ------------------------------------------------------------------------
    def _name(self, stem: str) -> str:
        self._counter += 1
        return f"{stem}-{self._counter}.safetensors"

    def _commit(self, report: dict[str, Any] | None) -> None:
        self.state["report"] = report
        self.state["counter"] = self._counter
        write_json(self.dir / STATE, self.state)
        keep = {STATE, *self.state["files"]["blocks"].values(), *self.state["files"].get("block_masks", {}).values()}
        keep |= {v for k, v in self.state["files"].items() if k not in ("blocks", "block_masks") and v}
        for p in self.dir.iterdir():
            if p.name not in keep:
                p.unlink(missing_ok=True)

    def save_step(self, stage: int, next_block: int, blocks: dict[int, nn.Module], hidden: list[torch.Tensor] | None,
                  dense_hidden: list[torch.Tensor] | None, masks: dict[str, torch.Tensor],
                  report: dict[str, Any], stage_state: dict[str, Any] | None = None,
                  block_masks: dict[int, dict[str, torch.Tensor]] | None = None) -> None:
        """After a finished block (or chunk of blocks) of a walking stage; ``block_masks``: the masks of just these
        blocks (written per block instead of all masks at every step)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        files = self.state["files"]
        for i, block in blocks.items():
            name = self._name(f"block-{i}")
            _save_tensors(block.state_dict(), self.dir / name)
            files["blocks"][str(i)] = name
        streams = {}
        for j, h in enumerate(hidden or []):
            streams[f"hidden.{j}"] = h
        for j, h in enumerate(dense_hidden or []):
            streams[f"dense.{j}"] = h
        if streams:
            files["streams"] = self._name("streams")
            _save_tensors(streams, self.dir / files["streams"])
        else:
            files["streams"] = None
        if block_masks is not None:  # only the masks of these blocks: a step writes what it changed
            per_block = files.setdefault("block_masks", {})
            for i, ms in block_masks.items():
                if ms:
                    per_block[str(i)] = self._name(f"masks-block-{i}")
                    save_masks(ms, self.dir / per_block[str(i)])
        else:
            self._save_masks(masks)
        self.state.update(stage=stage, block=next_block, stage_state=stage_state or {})
        self._commit(report)
        for hook in AFTER_BLOCK:
            hook(stage, next_block - 1)

    def save_stage_done(self, next_stage: int, model: nn.Module | None, masks: dict[str, torch.Tensor],
                        report: dict[str, Any]) -> None:
        """After a finished stage; ``model``: save the whole model (a stage that changed all of it)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        files = self.state["files"]
        if model is not None:
            files["model"] = self._name("model")
            _save_tensors(model.state_dict(), self.dir / files["model"])
            files["blocks"] = {}
        files["streams"] = None
        self._save_masks(masks)
        self.state.update(stage=next_stage, block=0, stage_state={})
        self._commit(report)

    def _save_masks(self, masks: dict[str, torch.Tensor]) -> None:
        if masks:
            name = self._name("masks")
            save_masks(masks, self.dir / name)
            self.state["files"]["masks"] = name
            self.state["files"]["block_masks"] = {}  # the whole set supersedes the per-block files

    def clear(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def _load_state(module: nn.Module, sd: dict[str, torch.Tensor], what: str) -> None:
    missing, unexpected = module.load_state_dict(sd, strict=False)
    if unexpected or [k for k in missing if k in dict(module.named_parameters())]:
        raise CheckpointError(f"checkpoint weights of {what} do not fit the model (missing {missing[:3]}, "
                              f"unexpected {unexpected[:3]}); pass --no-resume")
