"""Refit-aware swaps (maskopt.solve.refit_swaps, method 'refitswaps'): every swap priced exactly with the optimal refit
of the kept weights, the incremental state equal to a fresh one, the refit error never raised, 1-swap optimality
checked by recomputation, and enumeration of the refit problem on d = 12."""
import pytest
import torch
from test_alps import layer, refit_optimum, supports

from maskopt.solve.lstsq import layer_lstsq
from maskopt.solve.methods import get_method
from maskopt.solve.patterns import Pattern
from maskopt.solve.problem import LayerProblem
from maskopt.solve.refit_swaps import apply_swaps, best_swaps, init_state, kept_slots, price, refit_swap_refine

pytestmark = pytest.mark.usefixtures("one_thread")


def refit_errors(W, G, mask):
    """Per row: the error after the exact least-squares refit of the kept weights, wᵀGw − b_Sᵀ G_SS⁻¹ b_S (direct solve)."""
    out = []
    for w, m in zip(W, mask):
        S = m.nonzero().squeeze(1)
        b = G @ w
        out.append(w @ b - b[S] @ torch.linalg.solve(G[S][:, S], b[S]))
    return torch.stack(out)


def random_mask(rows, d, k, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.stack([torch.zeros(d, dtype=torch.bool).index_fill_(0, torch.randperm(d, generator=g)[:k], True)
                        for _ in range(rows)])


def pruned(st):
    return torch.stack([(~st.kept[r]).nonzero().squeeze(1) for r in range(st.kept.shape[0])])


@pytest.mark.parametrize("correlated", [False, True])
def test_every_priced_swap_equals_the_recomputed_refit_error(correlated):
    W, G = layer(7, 3, 14, 60, correlated)
    mask = random_mask(3, 14, 6, 0)
    st = init_state(W, G, kept_slots(mask))
    assert torch.allclose(st.E, refit_errors(W, G, mask), rtol=1e-10)
    P = pruned(st)
    D, _ = price(st, G, P)
    for r in range(3):
        for i in range(P.shape[1]):
            for j in range(st.S.shape[1]):
                m2 = mask[r : r + 1].clone()
                m2[0, P[r, i]], m2[0, st.S[r, j]] = True, False
                after = refit_errors(W[r : r + 1], G, m2)[0]
                assert float(D[r, i, j]) == pytest.approx(float(after - st.E[r]), rel=1e-8, abs=1e-9 * float(st.E[r]))


def test_updated_state_equals_a_fresh_one_and_the_search_is_exact():
    W, G = layer(8, 4, 16, 64, True)
    mask = random_mask(4, 16, 7, 1)
    st = init_state(W, G, kept_slots(mask))
    pat = Pattern.parse("per_row")
    for step in range(8):
        best, p, j, K, _ = best_swaps(st, G, pat, probe=2, exhaustive=True)
        D, _ = price(st, G, pruned(st))
        assert torch.allclose(best, D.reshape(4, -1).min(1).values, rtol=1e-12)  # screening never misses the best
        go = torch.tensor([True, step % 2 == 0, step % 3 != 1, True])
        before = st.E.clone()
        apply_swaps(st, G, go, p, j, K, best)
        fresh = init_state(W, G, st.S.clone())
        assert torch.equal(st.kept, fresh.kept)
        for name in ("H", "x", "c", "E"):
            a, b = getattr(st, name), getattr(fresh, name)
            assert torch.allclose(a, b, rtol=1e-9, atol=1e-9 * float(b.abs().max())), name
        assert torch.allclose(st.s[~st.kept], fresh.s[~st.kept], rtol=1e-9, atol=1e-9 * float(fresh.s.abs().max()))
        assert torch.equal(st.E[~go], before[~go])


@pytest.mark.parametrize("pattern,k", [("per_row", 8), ("2:4", 10), ("cs256", 128)])
def test_swaps_never_raise_the_refit_error_and_end_1_swap_optimal(pattern, k):
    d = 512 if pattern == "cs256" else 20
    W, G = layer(9, 3, d, 3 * d, True)
    pat = Pattern.parse(pattern)
    if pattern == "2:4":
        mask = torch.zeros(3, d, dtype=torch.bool)
        mask[:, 0::4] = mask[:, 1::4] = True
    elif pattern == "cs256":
        mask = torch.zeros(3, d, dtype=torch.bool)
        mask[:, :64] = mask[:, 256:320] = True
    else:
        mask = random_mask(3, d, k, 2)
    prev = refit_errors(W, G, mask)
    for n in (1, 2, 4):  # more swaps: never a higher error, and every intermediate mask keeps the pattern
        res = refit_swap_refine(W, G, mask, pat, max_iter=n, tol=0.0)
        assert pat.counts_ok(res.mask, pat.n if pat.kind == "nm" else int(mask[0].sum()))
        assert (res.mask.sum(1) == int(mask[0].sum())).all()
        cur = refit_errors(W, G, res.mask)
        assert torch.allclose(cur, res.errors, rtol=1e-9)
        assert (cur <= prev * (1 + 1e-12)).all()
        prev = cur
    res = refit_swap_refine(W, G, mask, pat, tol=0.0)
    assert res.converged.all()
    if pattern == "cs256":
        return  # the brute-force check below is for small d
    st = init_state(W, G, kept_slots(res.mask))
    D, _ = price(st, G, pruned(st))
    ok = pat.same_block(pruned(st)[:, :, None], st.S[:, None, :])
    if ok is not None:
        D = D.masked_fill(~ok, float("inf"))
    assert (D.reshape(3, -1).min(1).values >= -1e-9 * st.E).all()  # no improving swap is left


@pytest.mark.parametrize("correlated", [False, True])
@pytest.mark.parametrize("pattern,sparsity,k", [("per_row", 0.5, 6), ("3:4", 0.25, 9), ("per_row", 0.7, 4)])
def test_against_enumeration_of_the_refit_problem(correlated, pattern, sparsity, k):
    """d = 12: never below the enumerated optimum; from three warm starts the local optimum is the global one on
    most rows (measured: 263 of 288 rows over these cases)."""
    hits = total = 0
    for seed in range(4):
        W, G = layer(seed, 4, 12, 48, correlated)
        p = LayerProblem(W, G, pattern, sparsity)
        opt = refit_optimum(W, G, supports(p.pattern, 12, k))
        for warm in ("alps", "sparsegpt", "wanda"):
            s = get_method("refitswaps", warm_start=warm, tol=0.0).solve(p)
            rows = p.row_errors(s.mask, s.weight)
            assert (rows >= opt * (1 - 1e-9)).all()
            assert p.error(s.mask, s.weight) <= s.info["warm_refit_error"] * (1 + 1e-12)
            hits += int((rows <= opt * (1 + 1e-9)).sum())
            total += rows.numel()
    assert hits >= 0.75 * total


def test_method_below_its_warm_start_feasible_and_deterministic():
    W, G = layer(3, 16, 64, 256, True, torch.float32)
    p = LayerProblem(W, G, "per_row", 0.6)
    a = get_method("refitswaps").solve(p)
    b = get_method("refitswaps").solve(p)
    assert torch.equal(a.mask, b.mask) and torch.equal(a.weight, b.weight)
    assert p.is_feasible(a.mask) and (a.weight[~a.mask] == 0).all() and a.weight.dtype == torch.float32
    alps = get_method("alps").solve(p)
    assert a.info["error"] < p.error(alps.mask, alps.weight)
    assert a.info["tracked_error"] == pytest.approx(a.info["error"], rel=1e-5)
    with pytest.raises(ValueError, match="same kept count"):
        get_method("refitswaps").solve(LayerProblem(W, G, "unstructured", 0.6))
    with pytest.raises(ValueError, match="unknown warm start"):
        get_method("refitswaps", warm_start="nope")


def test_only_swaps_in_the_layers_it_names():
    W, G = layer(4, 8, 32, 128, True, torch.float32)
    m = get_method("refitswaps", only=r"self_attn\.(q|k)_proj$")
    q = m.solve(LayerProblem(W, G, "per_row", 0.5, name="model.layers.0.self_attn.q_proj"))
    v = m.solve(LayerProblem(W, G.clone(), "per_row", 0.5, name="model.layers.0.self_attn.v_proj"))
    alps = get_method("alps").solve(LayerProblem(W, G, "per_row", 0.5))
    assert "skipped" not in q.info and v.info["skipped"]
    assert torch.equal(v.mask, alps.mask) and torch.equal(v.weight, alps.weight)
    with pytest.raises(ValueError, match="regular expression"):
        get_method("refitswaps", only="(")
