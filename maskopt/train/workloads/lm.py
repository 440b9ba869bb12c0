"""A causal LM retrained on a text file, scored by perplexity on held-out text (lower is better).

Training text → tokens; its last ``val_fraction`` is held out as validation text (greedy soups,
model selection), the rest cut into non-overlapping windows of ``seqlen`` tokens, one shuffled
pass per epoch in batches of ``batch_size``. Test perplexity: the first ``eval_windows`` windows of
``eval_seqlen`` tokens of the evaluation text (the protocol of ``maskopt eval``).
Prunable weights: the linear layers of the decoder blocks (embeddings and the LM head stay dense).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator

import torch
from torch import nn

from ..optim import OptimizerSpec
from ..schedules import TrainSchedule
from .base import Workload, epoch_order


@dataclass
class LMWorkload(Workload):
    model_path: str
    train_text: str
    eval_text: str
    seqlen: int = 256
    batch_size: int = 8
    val_fraction: float = 0.1
    eval_seqlen: int = 512
    eval_windows: int = 64
    val_windows: int = 16
    calib_windows: int = 32
    lr: float = 2e-4
    schedule_steps: int = 859  # nominal length of the original schedule (the tiny model's own run)

    name = "lm"
    metric = "perplexity"
    higher_is_better = False

    def __post_init__(self) -> None:
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"val_fraction must lie in (0, 1), got {self.val_fraction}")
        if self.seqlen < 2 or self.eval_seqlen < 2 or self.batch_size < 1:
            raise ValueError("seqlen and eval_seqlen must be ≥ 2 and batch_size ≥ 1")

    def _tok(self):
        if getattr(self, "_cache_tok", None) is None:
            from transformers import AutoTokenizer  # noqa: PLC0415

            self._cache_tok = AutoTokenizer.from_pretrained(self.model_path)
        return self._cache_tok

    def _data(self) -> dict[str, torch.Tensor]:
        if getattr(self, "_cache_data", None) is None:
            from ...data import DataError, eval_windows, read_texts, tokenize  # noqa: PLC0415

            ids = tokenize(self._tok(), read_texts(self.train_text))
            n_val = int(self.val_fraction * ids.numel())
            train_ids, val_ids = ids[: ids.numel() - n_val], ids[ids.numel() - n_val:]
            n_win = train_ids.numel() // self.seqlen
            if n_win < self.batch_size:
                raise DataError(f"training text gives {n_win} windows of {self.seqlen} tokens, fewer than one "
                                f"batch of {self.batch_size}: give more text or lower seqlen / batch_size")
            val_len = min(self.eval_seqlen, max(2, val_ids.numel() // 2))
            self._cache_data = {
                "train": train_ids[: n_win * self.seqlen].reshape(n_win, self.seqlen),
                "val": eval_windows(val_ids, val_len, self.val_windows),
                "test": eval_windows(tokenize(self._tok(), read_texts(self.eval_text)), self.eval_seqlen,
                                     self.eval_windows),
            }
        return self._cache_data

    def build_model(self, seed: int = 0) -> nn.Module:
        from ...model.loading import load_model  # noqa: PLC0415

        model, _ = load_model(self.model_path)
        model.config.use_cache = False
        return model

    def prunable(self, model: nn.Module) -> dict[str, nn.Parameter]:
        from ...model.adapters import get_adapter  # noqa: PLC0415

        adapter = get_adapter(model)
        return {f"{adapter.blocks}.{i}.{n}.weight": m.weight for i, b in enumerate(adapter.get_blocks(model))
                for n, m in adapter.linears(b).items()}

    def steps_per_epoch(self) -> int:
        return math.ceil(self._data()["train"].shape[0] / self.batch_size)

    def batches(self, seed: int) -> Iterator[torch.Tensor]:
        W = self._data()["train"]
        epoch = 0
        while True:
            order = epoch_order(W.shape[0], seed, epoch)
            for i in range(0, W.shape[0], self.batch_size):
                yield W[order[i:i + self.batch_size]]
            epoch += 1

    def loss(self, model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
        return model(input_ids=batch, labels=batch, use_cache=False).loss

    @torch.no_grad()
    def evaluate(self, model: nn.Module, split: str = "test") -> float:
        from ...perplexity import perplexity  # noqa: PLC0415

        was = model.training
        model.eval()
        try:
            return perplexity(model, self._data()[split], batch_size=8, progress=False, device="cpu")
        finally:
            model.train(was)

    def calibration(self) -> torch.Tensor:
        W = self._data()["train"]
        g = torch.Generator().manual_seed(0)
        return W[torch.randperm(W.shape[0], generator=g)[: min(self.calib_windows, W.shape[0])]]

    def default_schedule(self) -> TrainSchedule:
        """Nominal original schedule: cosine from ``lr`` to lr/10 over ``schedule_steps`` (the tiny model's
        real schedule is not recorded; this stands in for it in FT, LRW, SLR, CLR and ALLR)."""
        return TrainSchedule("cosine", self.lr, self.schedule_steps, final_lr=self.lr / 10)

    def default_optimizer(self) -> OptimizerSpec:
        return OptimizerSpec("adamw", weight_decay=0.0)

    def describe(self) -> dict:
        d = self._data()
        return super().describe() | {"model": str(self.model_path), "seqlen": self.seqlen,
                                     "batch_size": self.batch_size, "train_windows": int(d["train"].shape[0]),
                                     "val_windows": int(d["val"].shape[0]), "test_windows": int(d["test"].shape[0]),
                                     "eval_seqlen": self.eval_seqlen}
