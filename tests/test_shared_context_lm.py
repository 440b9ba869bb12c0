"""SharedContextLM gives lm-eval HFLM's loglikelihoods and greedy flags, in request order, running each context once."""
import pytest
import torch
from conftest import FAMILIES, VOCAB, mc_task, tiny_model, tiny_tokenizer
from lm_eval.models.huggingface import HFLM

from maskopt.shared_context_lm import SharedContextLM
from maskopt.zeroshot import zero_shot

pytestmark = pytest.mark.usefixtures("one_thread")


def _requests(model, seed: int = 0):
    """Contexts shared by 1–4 continuations of 1–5 tokens, one continuation the model's greedy choice, one request
    longer than the 64-token window (left-truncated by HFLM)."""
    g = torch.Generator().manual_seed(seed)
    reqs = []
    for c in range(6):
        ctx = torch.randint(1, VOCAB, (int(torch.randint(1, 12, (1,), generator=g)),), generator=g).tolist()
        for k in range(1 + c % 4):
            n = 1 + (c + k) % 5
            reqs.append(((f"c{c}", f"k{k}"), ctx, torch.randint(1, VOCAB, (n,), generator=g).tolist()))
        greedy = list(ctx)
        with torch.no_grad():
            for _ in range(3):
                greedy.append(int(model(torch.tensor([greedy])).logits[0, -1].argmax()))
        reqs.append(((f"c{c}", "greedy"), ctx, greedy[len(ctx):]))
    for c in range(5):  # contexts of one length with as many choices: one batch
        ctx = torch.randint(1, VOCAB, (7,), generator=g).tolist()
        for k in range(3):
            reqs.append(((f"b{c}", f"k{k}"), ctx, torch.randint(1, VOCAB, (1 + (c * k) % 4,), generator=g).tolist()))
    reqs.append((("long", "x"), list(range(1, 61)), [5, 6, 7, 8, 9, 10]))
    perm = torch.randperm(len(reqs), generator=g).tolist()
    return [reqs[i] for i in perm]


@pytest.mark.parametrize("family", FAMILIES)
def test_same_loglikelihoods_and_greedy_flags_as_hflm(family):
    model = tiny_model(family)
    reqs = _requests(model)
    ref = HFLM(pretrained=model, tokenizer=tiny_tokenizer(), batch_size=3)._loglikelihood_tokens(reqs, True)
    calls = []
    model.register_forward_hook(lambda m, a, kw, out: calls.append(1), with_kwargs=True)
    got = SharedContextLM(pretrained=model, tokenizer=tiny_tokenizer(), batch_size=3)._loglikelihood_tokens(reqs, True)
    assert len(got) == len(ref)
    for (lp, gr), (lp_ref, gr_ref) in zip(got, ref, strict=True):
        assert lp == pytest.approx(lp_ref, abs=1e-4)
        assert gr == gr_ref
    assert sum(g for _, g in ref) >= 6  # the greedy continuations are recognised (else the flag goes untested)
    contexts = {tuple(r[1]) for r in reqs if r[0][0] != "long"}
    multi = {tuple(r[1]) for r in reqs if r[0][0] != "long" and len(r[2]) > 1}
    assert len(calls) <= len(contexts) + len(multi) + 1  # one pass per context (+ one for its continuations)


def test_zero_shot_answers_each_document_as_hflm_does(tmp_path):
    docs = [{"question": f"w{i} w{i + 1} w{(3 * i) % 40}", "choices": [f"w{i + 2}", f"w{i + 3} w{i + 4}", "w5 w6 w7"],
             "label": i % 3} for i in range(24)]
    mc_task(tmp_path, "mc24", docs, ("acc", "acc_norm"))
    model, tok = tiny_model("llama", seed=3), tiny_tokenizer()
    shared = zero_shot(model, tok, ["mc24"], include_path=tmp_path, return_docs=True)
    plain = zero_shot(model, tok, ["mc24"], include_path=tmp_path, return_docs=True, share_context=False)
    assert shared[1] == plain[1]
    assert shared[0]["mc24"]["acc"] == pytest.approx(plain[0]["mc24"]["acc"])


def test_contexts_of_one_length_and_choice_count_run_as_one_batch():
    model = tiny_model("llama")
    g = torch.Generator().manual_seed(1)
    reqs = [((f"c{c}", f"k{k}"), ctx, torch.randint(1, VOCAB, (2 + k,), generator=g).tolist())
            for c, ctx in enumerate(torch.randint(1, VOCAB, (8, 9), generator=g).tolist()) for k in range(4)]
    calls = []
    hook = model.register_forward_hook(lambda m, a, kw, out: calls.append(kw["input_ids"].shape), with_kwargs=True)
    got = SharedContextLM(pretrained=model, tokenizer=tiny_tokenizer(), batch_size=8)._loglikelihood_tokens(reqs, True)
    assert calls == [torch.Size([8, 9]), torch.Size([32, 4])]  # the contexts, then every choice on their caches
    hook.remove()
    ref = HFLM(pretrained=model, tokenizer=tiny_tokenizer(), batch_size=8)._loglikelihood_tokens(reqs, True)
    assert [a for a, _ in got] == pytest.approx([a for a, _ in ref], abs=1e-4)


def test_a_cache_that_cannot_be_repeated_falls_back_to_hflm_and_says_so(monkeypatch):
    from transformers import DynamicCache

    model = tiny_model("llama")
    reqs = _requests(model, seed=2)
    ref = HFLM(pretrained=model, tokenizer=tiny_tokenizer(), batch_size=3)._loglikelihood_tokens(reqs, True)
    owner = next(c for c in DynamicCache.__mro__ if "batch_repeat_interleave" in vars(c))
    monkeypatch.delattr(owner, "batch_repeat_interleave")
    with pytest.warns(UserWarning, match="DynamicCache cache: every request runs with its context again"):
        got = SharedContextLM(pretrained=model, tokenizer=tiny_tokenizer(), batch_size=3)._loglikelihood_tokens(reqs,
                                                                                                              True)
    assert got == ref
