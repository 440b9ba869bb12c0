"""match='dense': each layer reproduces the dense model's output from the pruned model's inputs,
min ‖W X_d − Ŵ X_p‖², solved as the usual layer problem with W' = W C G⁻¹ (C = X_d X_pᵀ)."""
import copy

import pytest
import torch
from conftest import VOCAB, tiny_model
from hypothesis import given, settings, strategies as st

import maskopt
from maskopt.model.adapters import get_adapter
from maskopt.model.calibrate import Batch, BlockWalker, collect_cross_grams, collect_grams, run_block
from maskopt.solve.lstsq import dense_target


def _windows(n=8, L=16, seed=0):
    return torch.randint(0, VOCAB, (n, L), generator=torch.Generator().manual_seed(seed))


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), d=st.integers(2, 9), rows=st.integers(1, 5), noise=st.floats(0.0, 2.0),
       alpha=st.sampled_from([1.0, 0.25, 0.6]))
def test_objective_differs_by_a_constant(seed, d, rows, noise, alpha):
    """(1 − α)‖(W − Ŵ) X_p‖² + α‖W X_d − Ŵ X_p‖² − ‖(W' − Ŵ) X_p‖² is the same number for every Ŵ (no damping,
    X_p of full rank): strength α mixes the two objectives, α = 1 is the dense match."""
    g = torch.Generator().manual_seed(seed)
    n = 4 * d + 3
    W = torch.randn(rows, d, generator=g, dtype=torch.float64)
    Xd = torch.randn(d, n, generator=g, dtype=torch.float64)
    Xp = Xd + noise * torch.randn(d, n, generator=g, dtype=torch.float64)
    Wp = dense_target(W, Xp @ Xp.T, Xd @ Xp.T, damp=0.0, strength=alpha)
    gaps = []
    for _ in range(4):
        Wh = torch.randn(rows, d, generator=g, dtype=torch.float64) * (torch.rand(rows, d, generator=g) < 0.5)
        mixed = (1 - alpha) * (((W - Wh) @ Xp) ** 2).sum() + alpha * ((W @ Xd - Wh @ Xp) ** 2).sum()
        gaps.append(float(mixed - (((Wp - Wh) @ Xp) ** 2).sum()))
    scale = float(((W @ Xd) ** 2).sum()) + float(((W @ Xp) ** 2).sum()) + float(((Wp @ Xp) ** 2).sum())
    assert max(gaps) - min(gaps) <= 1e-9 * scale


def test_unchanged_inputs_give_the_weights_back_and_shapes_are_checked():
    g = torch.Generator().manual_seed(0)
    W, X = torch.randn(3, 6, generator=g), torch.randn(6, 4, generator=g)  # rank-deficient G: still exact
    G = X @ X.T
    for damp in (0.0, 0.01):
        assert torch.equal(dense_target(W, G, G, damp=damp), W.double())
    with pytest.raises(ValueError, match="6×6"):
        dense_target(W, G, G[:5, :5])


def test_cross_grams_match_the_layer_inputs():
    model = tiny_model("llama")
    adapter = get_adapter(model)
    block = adapter.get_blocks(model)[0]
    g = torch.Generator().manual_seed(1)
    kw = None
    for step in BlockWalker(model, adapter, _windows(), batch_size=4, progress=False):
        kw = step.inputs
        break
    dense = [Batch(b.hidden, b.args, b.kwargs) for b in kw]
    pruned = [Batch(b.hidden + 0.3 * torch.randn(b.hidden.shape, generator=g), b.args, b.kwargs) for b in kw]
    grams, cross, dense_out = collect_cross_grams(block, adapter, pruned, dense, torch.device("cpu"))
    want_out = run_block(block, dense, torch.device("cpu"))
    assert len(dense_out) == len(want_out) and all(torch.equal(a.hidden, b.hidden) for a, b in zip(dense_out, want_out))
    ref = collect_grams(block, adapter, pruned, torch.device("cpu"))
    seen: dict[str, list] = {}
    hooks = [block.get_submodule(grp[0]).register_forward_pre_hook(
        lambda _m, a, n=grp[0]: seen.setdefault(n, []).append(a[0].reshape(-1, a[0].shape[-1]).double()))
        for grp in adapter.linear_groups]
    for b, bd in zip(pruned, dense):
        run_block(block, [bd], torch.device("cpu"))
        run_block(block, [b], torch.device("cpu"))
    for h in hooks:
        h.remove()
    for grp in adapter.linear_groups:
        xs = seen[grp[0]]
        Xd, Xp = torch.cat(xs[0::2]), torch.cat(xs[1::2])
        for name in grp:
            torch.testing.assert_close(grams[name], ref[name])
            torch.testing.assert_close(cross[name], Xd.T @ Xp, rtol=1e-5, atol=1e-4)
            assert not torch.allclose(cross[name], grams[name])  # the two streams differ
    with pytest.raises(ValueError, match="dense ones"):
        collect_cross_grams(block, adapter, pruned, dense[:1], torch.device("cpu"))


def test_twin_stream_is_the_unchanged_model():
    """The walker's twin inputs equal a dense copy's own activations while the caller prunes every block."""
    model = tiny_model("llama")
    model.config.num_hidden_layers = 2
    dense = copy.deepcopy(model)
    adapter = get_adapter(model)
    w = _windows()
    want = [s.inputs[0].hidden.clone() for s in BlockWalker(dense, adapter, w, batch_size=4, progress=False)]
    got, pruned_in = [], []
    for step in BlockWalker(model, adapter, w, batch_size=4, progress=False, twin=True):
        got.append(step.dense_inputs[0].hidden.clone())
        pruned_in.append(step.inputs[0].hidden.clone())
        for mod in adapter.linears(step.block).values():
            mod.weight.data[:, ::2] = 0
    assert len(got) == len(want) == 2
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)
    assert not torch.allclose(pruned_in[1], got[1])  # the pruned stream did change
    with pytest.raises(ValueError, match="twin"):
        BlockWalker(model, adapter, w, dense_model=dense, twin=True)


def test_twin_stream_run_by_the_caller_is_the_same_and_must_be_given():
    """twin_by_caller: the caller's collect_cross_grams forward carries the twin stream (bitwise the walker's own
    twin inputs); a step left without twin_outputs is an error, not a silently stale stream."""
    model = tiny_model("llama")
    adapter = get_adapter(model)
    w = _windows()

    def walk(by_caller: bool) -> list[torch.Tensor]:
        m = copy.deepcopy(model)
        seen = []
        for step in BlockWalker(m, adapter, w, batch_size=4, progress=False, twin=True, twin_by_caller=by_caller):
            seen.append(torch.cat([b.hidden for b in step.dense_inputs]))
            _, _, out = collect_cross_grams(step.block, adapter, step.inputs, step.dense_inputs, torch.device("cpu"))
            if by_caller:
                step.twin_outputs = out
            for mod in adapter.linears(step.block).values():
                mod.weight.data[:, ::2] = 0
        return seen

    own, caller = walk(False), walk(True)
    assert len(own) == len(caller) == len(adapter.get_blocks(model)) > 1 and all(torch.equal(a, b) for a, b in zip(own, caller))
    with pytest.raises(RuntimeError, match="twin_outputs"):
        for _step in BlockWalker(copy.deepcopy(model), adapter, w, batch_size=4, progress=False, twin=True,
                                 twin_by_caller=True):
            pass
    with pytest.raises(ValueError, match="twin=True"):
        BlockWalker(model, adapter, w, twin_by_caller=True)


def _layer_inputs(model, adapter, w, name):
    xs = []
    h = model.get_submodule(name).register_forward_pre_hook(lambda _m, a: xs.append(a[0].reshape(-1, a[0].shape[-1])))
    with torch.no_grad():
        model(input_ids=w)
    h.remove()
    return torch.cat(xs).double().T  # d × tokens


@pytest.mark.parametrize("method", ["magnitude", "sparsegpt"])
def test_refit_on_the_dense_match_is_its_least_squares_optimum(method):
    """With refit and no ridge, every kept weight of block 1's q_proj satisfies the normal equations of
    min ‖W X_d − Ŵ X_p‖² on its row's support (X_d from the dense model, X_p from the pruned one);
    with match='pruned' they do not hold (the test can fail)."""
    w = _windows(16, 16)
    name = "model.layers.1.self_attn.q_proj"
    residuals = {}
    for match in ("dense", "pruned"):
        model = tiny_model("llama")
        dense = copy.deepcopy(model)
        adapter = get_adapter(model)
        cfg = maskopt.PruneConfig(method=method, sparsity=0.5, refit=True, match=match, match_damp=0.0,
                                  progress=False, batch_size=4, reference=None,
                                  **({"match_strength": 1.0} if match == "dense" else {}))
        report = maskopt.prune(model, w, cfg)
        Xd, Xp = _layer_inputs(dense, adapter, w, name), _layer_inputs(model, adapter, w, name)
        W, Wh = dense.get_submodule(name).weight.detach().double(), model.get_submodule(name).weight.detach().double()
        grad = (Wh @ Xp - W @ Xd) @ Xp.T
        kept = Wh != 0
        residuals[match] = float(grad[kept].abs().max() / (W @ Xd @ Xp.T).abs().max())
        if match == "dense":
            shifts = {r.name: r.info["match_shift"] for r in report.layers}
            assert all(v == 0 for k, v in shifts.items() if ".layers.0." in k)  # block 0 sees the dense inputs
            assert all(v > 0 for k, v in shifts.items() if ".layers.1." in k)
        else:
            assert all("match_shift" not in r.info for r in report.layers)
    assert residuals["dense"] < 1e-4
    assert residuals["pruned"] > 1e-3


def test_strength_scales_the_correction_and_match_layers_choose_the_layers():
    g = torch.Generator().manual_seed(3)
    W, Xd = torch.randn(4, 6, generator=g, dtype=torch.float64), torch.randn(6, 40, generator=g, dtype=torch.float64)
    Xp = Xd + 0.5 * torch.randn(6, 40, generator=g, dtype=torch.float64)
    full = dense_target(W, Xp @ Xp.T, Xd @ Xp.T)
    torch.testing.assert_close(dense_target(W, Xp @ Xp.T, Xd @ Xp.T, strength=0.5), (W + full) / 2)
    model = tiny_model("llama")
    cfg = maskopt.PruneConfig(method="sparsegpt", sparsity=0.5, match="dense", match_layers=["re:.*down_proj"],
                              progress=False, batch_size=4, reference=None)
    report = maskopt.prune(model, _windows(), cfg)
    matched = {r.name for r in report.layers if "match_shift" in r.info}
    assert matched == {r.name for r in report.layers if r.name.endswith("down_proj")} and len(matched) == 2


@pytest.mark.parametrize("fields,message", [
    ({"match": "teacher"}, "match"), ({"match": "dense", "match_damp": -1}, "match_damp"),
    ({"match": "dense", "match_strength": 0}, "match_strength"), ({"match": "dense", "match_strength": 1.5}, "match_strength"),
    ({"match_layers": ["re:.*down_proj"]}, "needs match='dense'"), ({"match": "dense", "match_layers": ["re:("]}, "match_layers"),
])
def test_bad_match_settings_are_refused(fields, message):
    with pytest.raises(ValueError, match=message):
        maskopt.PruneConfig(**fields)
