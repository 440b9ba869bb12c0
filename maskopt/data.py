"""Text → token windows for calibration (random, seeded) and evaluation (non-overlapping)."""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Sequence

import torch


class DataError(ValueError):
    """Calibration or evaluation text that cannot serve the request."""


MAX_BAD_SHARE = 0.001  # share of undecodable bytes (or NULs) above which a text file is refused


def read_text_file(path: Path) -> str:
    """A UTF-8 text file with universal newlines (as ``Path.read_text``); binary, Latin-1 or UTF-16 files
    (undecodable bytes, NULs) are refused by name."""
    raw = path.read_bytes()
    text = raw.decode("utf-8", errors="replace").replace("\r\n", "\n").replace("\r", "\n")  # universal newlines
    bad = text.count("\ufffd") + text.count("\x00")
    if text and bad > max(2, MAX_BAD_SHARE * len(text)):
        raise DataError(f"{path} is not UTF-8 text ({bad} of {len(text)} characters are undecodable bytes or NULs): "
                        "convert it to UTF-8 (e.g. iconv -f latin1 -t utf-8) or pass another file")
    if bad:
        warnings.warn(f"{path}: {bad} undecodable byte(s) or NUL(s) replaced (of {len(text)} characters)", stacklevel=2)
    return text


def read_texts(sources: str | Path | Sequence[str | Path]) -> str:
    """Concatenate local text files; a name that is no file is tried as a `datasets` dataset."""
    if isinstance(sources, (str, Path)):
        sources = [sources]
    parts = []
    for src in sources:
        p = Path(src)
        if p.is_file():
            parts.append(read_text_file(p))
        elif p.is_dir():
            files = sorted(p.glob("*.txt"))
            if not files:
                raise DataError(f"directory {p} holds no .txt files")
            parts.extend(read_text_file(f) for f in files)
        elif p.exists():
            raise DataError(f"{src} is not a regular text file (a device, pipe or socket); pass a text file")
        elif str(src).startswith((".", "/", "~")) or p.suffix in (".txt", ".text", ".md", ".json", ".jsonl"):
            raise DataError(f"text file {src} does not exist")
        else:
            parts.append(_from_datasets(str(src)))
    text = "\n".join(parts)
    if not text.strip():
        raise DataError(f"the text in {', '.join(map(str, sources))} is empty (or only white space)")
    return text


def chat_text(path: Path, tokenizer) -> str:
    """A JSONL calibration file as text: each line ``{"messages": [{"role": …, "content": …}, …]}`` rendered with
    the tokenizer's chat template (the text the model sees in use), or ``{"text": "…"}`` taken as it is."""
    import json  # noqa: PLC0415

    parts = []
    for i, line in enumerate(read_text_file(path).splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as e:
            raise DataError(f"{path}:{i}: not a JSON object ({e})") from None
        if isinstance(row, dict) and isinstance(row.get("messages"), list):
            if getattr(tokenizer, "chat_template", None) is None:
                raise DataError(f"{path} holds chat conversations, but the model's tokenizer has no chat template to "
                                "render them; give raw text, or a model with a chat template")
            msgs = row["messages"]
            if not all(isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
                       for m in msgs) or not msgs:
                raise DataError(f"{path}:{i}: 'messages' must be a non-empty list of {{'role': …, 'content': …}}")
            try:
                parts.append(tokenizer.apply_chat_template(msgs, tokenize=False))
            except Exception as e:  # noqa: BLE001 - a template may reject a role order
                raise DataError(f"{path}:{i}: the chat template rejects this conversation ({e})") from None
        elif isinstance(row, dict) and isinstance(row.get("text"), str):
            parts.append(row["text"])
        else:
            raise DataError(f"{path}:{i}: each line must hold 'messages' (a chat) or 'text'")
    if not parts:
        raise DataError(f"{path} holds no conversations")
    return "".join(parts)


def calibration_text(sources: Sequence[str | Path], tokenizer) -> str:
    """Calibration text: ``.jsonl`` files as chats or texts (chat_text), everything else as read_texts reads it."""
    parts = []
    for src in sources:
        p = Path(src)
        parts.append(chat_text(p, tokenizer) if p.is_file() and p.suffix == ".jsonl" else read_texts([src]))
    return "\n".join(parts)


def _from_datasets(name: str) -> str:
    """'name[:config[:split]]' from the `datasets` library (only when it is installed and reachable)."""
    try:
        import datasets  # noqa: PLC0415
    except ImportError:
        raise DataError(
            f"{name!r} is not a file or directory, and the optional `datasets` package is not installed "
            "to load it as a dataset (pip install datasets)"
        ) from None
    from .model.loading import hub_reachable  # noqa: PLC0415

    bits = name.split(":")
    online = hub_reachable()
    offline_before = datasets.config.HF_HUB_OFFLINE
    if not online:  # only the local cache can answer: ask it alone instead of retrying the hub for a minute
        datasets.config.HF_HUB_OFFLINE = True
    try:
        ds = datasets.load_dataset(bits[0], bits[1] if len(bits) > 1 and bits[1] else None,
                                   split=bits[2] if len(bits) > 2 else "train")
    except Exception as e:  # noqa: BLE001 - any loader failure is a data error for the user
        if not online:
            raise DataError(f"{name!r} is not a local file or folder, and the Hugging Face hub is unreachable "
                            "(offline), so it cannot be loaded as a dataset either (it is not in the local "
                            "datasets cache). Pass a local text file.") from None
        raise DataError(f"{name!r} is not a file, and loading it as a dataset failed: {e}") from None
    finally:
        datasets.config.HF_HUB_OFFLINE = offline_before
    col = "text" if "text" in ds.column_names else ds.column_names[0]
    return "\n\n".join(ds[col])


def tokenize(tokenizer, text: str) -> torch.Tensor:
    """The whole text as one 1-D tensor of token ids."""
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False, verbose=False)["input_ids"][0]
    return ids.to(torch.long)


def calibration_windows(ids: torch.Tensor, nsamples: int, seqlen: int, seed: int = 0) -> torch.Tensor:
    """``nsamples`` random windows of ``seqlen`` tokens (nsamples × seqlen), reproducible for a seed."""
    if nsamples < 1 or seqlen < 2:
        raise DataError(f"need nsamples ≥ 1 and seqlen ≥ 2, got {nsamples} × {seqlen}")
    n = ids.numel()
    if n < seqlen + 1:
        raise DataError(
            f"calibration text has {n} tokens; {nsamples} windows of {seqlen} tokens need at least "
            f"{seqlen + 1} tokens (and {nsamples * seqlen} for {nsamples} windows): give more text, "
            "or lower --seqlen / --nsamples"
        )
    if n < nsamples * seqlen:
        raise DataError(
            f"calibration text has {n} tokens, but {nsamples} × {seqlen} = {nsamples * seqlen} are needed: "
            "give more text, or lower --nsamples / --seqlen"
        )
    gen = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, n - seqlen, (nsamples,), generator=gen)
    return torch.stack([ids[s : s + seqlen] for s in starts.tolist()])


def eval_windows(ids: torch.Tensor, seqlen: int, max_windows: int | None = None) -> torch.Tensor:
    """Non-overlapping windows (the WikiText-2 protocol): n_windows × seqlen, the tail is dropped."""
    n = ids.numel() // seqlen
    if n == 0:
        raise DataError(f"evaluation text has {ids.numel()} tokens, fewer than one window of {seqlen}")
    if max_windows is not None:
        n = min(n, max_windows)
    return ids[: n * seqlen].reshape(n, seqlen)


def model_context(model) -> int | None:
    """The number of positions the model was built for, when its config says."""
    cfg = model.config
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        v = getattr(cfg, key, None)
        if isinstance(v, int) and v > 0:
            return v
    return None


def context_length(model, cap: int = 2048) -> int:
    ctx = model_context(model)
    return min(ctx, cap) if ctx else cap


def check_seqlen(model, seqlen: int | None, what: str = "--seqlen") -> None:
    """A window longer than the model's context would use positions it never saw (or crash): refuse."""
    ctx = model_context(model)
    if seqlen is not None and ctx is not None and seqlen > ctx:
        raise DataError(f"{what} {seqlen} exceeds the model's context of {ctx} tokens "
                        f"({type(model.config).__name__}); use {what} {ctx} or less")


def make_windows(calibration, tokenizer, model, nsamples: int, seqlen: int | None, seed: int) -> torch.Tensor:
    """Calibration as token windows: a ready (n × L) tensor, or text file(s) / dataset name(s)."""
    if isinstance(calibration, torch.Tensor):
        if calibration.ndim != 2 or calibration.numel() == 0:
            raise ValueError("calibration tensor must be a non-empty (nsamples × seqlen) tensor of token ids")
        check_seqlen(model, calibration.shape[1], "calibration window length")
        return calibration.long()
    if tokenizer is None:
        raise ValueError("calibration given as text needs a tokenizer")
    check_seqlen(model, seqlen)
    seqlen = seqlen or context_length(model)
    sources = [calibration] if isinstance(calibration, (str, Path)) else list(calibration)
    ids = tokenize(tokenizer, calibration_text(sources, tokenizer))
    return calibration_windows(ids, nsamples, seqlen, seed)
