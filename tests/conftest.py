"""Shared fixtures: tiny random models of every supported family (no download) and a local tokenizer."""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: no busy-waiting threads on shared cores

import tempfile  # noqa: E402
from pathlib import Path

import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
os.environ.setdefault("MASKOPT_CACHE", tempfile.mkdtemp(prefix="maskopt-test-cache-"))  # never the user's cache

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
TINY_LLAMA = SHARED / "models" / "maskopt-tiny-llama"
needs_shared = pytest.mark.skipif(not TINY_LLAMA.is_dir(), reason="../shared (real model and texts) is absent")

VOCAB = 96


def tiny_config(family: str):
    from transformers import GPT2Config, GPTNeoXConfig, LlamaConfig, OPTConfig, Qwen2Config

    common = dict(vocab_size=VOCAB)
    if family == "llama":
        return LlamaConfig(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                           num_key_value_heads=2, max_position_embeddings=64, **common)
    if family == "qwen2":
        return Qwen2Config(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                           num_key_value_heads=2, max_position_embeddings=64, **common)
    if family == "opt":
        return OPTConfig(hidden_size=32, ffn_dim=64, num_hidden_layers=2, num_attention_heads=4,
                         max_position_embeddings=64, word_embed_proj_dim=32, **common)
    if family == "gpt2":
        return GPT2Config(n_embd=32, n_layer=2, n_head=4, n_positions=64, **common)
    if family == "gpt_neox":
        return GPTNeoXConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                             max_position_embeddings=64, **common)
    raise ValueError(family)


FAMILIES = ["llama", "qwen2", "opt", "gpt2", "gpt_neox"]


def tiny_model(family: str, seed: int = 0):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(family))
    model.eval()
    return model


def tiny_tokenizer():
    """A word-level tokenizer built offline on a small vocabulary."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = [f"w{i}" for i in range(VOCAB - 2)]
    vocab = {"<unk>": 0, "<eos>": 1, **{w: i + 2 for i, w in enumerate(words)}}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", eos_token="<eos>")


def random_text(n_words: int, seed: int = 0) -> str:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, VOCAB - 2, (n_words,), generator=g).tolist()
    return " ".join(f"w{i}" for i in ids)


@pytest.fixture
def text_file(tmp_path: Path) -> Path:
    p = tmp_path / "calib.txt"
    p.write_text(random_text(3000))
    return p


@pytest.fixture(params=FAMILIES)
def family(request) -> str:
    return request.param


def save_tiny(family: str, path: Path) -> Path:
    model = tiny_model(family)
    model.save_pretrained(path)
    tiny_tokenizer().save_pretrained(path)
    return path


@pytest.fixture
def one_thread():
    """Tiny models run far faster on one thread than on oversubscribed shared cores; restored after.
    Modules opt in with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def nan_after_digits(after: int, **kw):
    """A digits workload whose loss turns NaN after ``after`` loss evaluations (for last-good tests)."""
    from maskopt.train import DigitsWorkload

    class NaNAfter(DigitsWorkload):
        def __init__(self) -> None:
            super().__init__(**kw)
            self.after, self.calls = after, 0

        def loss(self, model, batch):
            self.calls += 1
            out = super().loss(model, batch)
            return out * float("nan") if self.calls > self.after else out

    return NaNAfter()


def mc_task(folder: Path, name: str, docs: list[dict], metrics: tuple[str, ...] = ("acc",)) -> Path:
    """A local lm-eval multiple-choice task ``name`` in ``folder`` (question, choices, label documents); returns
    the folder, for ``include_path``."""
    import json

    data = folder / f"{name}.jsonl"
    data.write_text("".join(json.dumps(d) + "\n" for d in docs))
    (folder / f"{name}.yaml").write_text(
        f"task: {name}\ndataset_path: json\ndataset_kwargs:\n  data_files:\n"
        f"    test: {data}\ntest_split: test\noutput_type: multiple_choice\n"
        'doc_to_text: "{{question}}"\ndoc_to_choice: "{{choices}}"\ndoc_to_target: label\n'
        "metric_list:\n" + "".join(f"  - metric: {m}\n" for m in metrics))
    return folder
