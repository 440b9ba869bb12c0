"""The cs256 mask constraint: k per row, a multiple of g per 256-input tile, in every mask method."""
import itertools

import pytest
import torch

from maskopt.solve.bnb.lmo import Infeasible, TileChunkLMO
from maskopt.solve.fw import TopKLMO
from maskopt.solve.fw.lmo import InfeasibleBounds
from maskopt.solve.methods import get_method
from maskopt.solve.patterns import Pattern, PatternError, tile_capacity, tile_chunk_topk, tile_counts
from maskopt.solve.problem import LayerProblem


def _problem(rows=4, d=300, sparsity=0.6, pattern="cs256", seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(d, 400, generator=g, dtype=dtype) * torch.rand(d, 1, generator=g, dtype=dtype) * 3
    W = torch.randn(rows, d, generator=g, dtype=dtype)
    return LayerProblem(W, X @ X.T, pattern, sparsity)


def test_parse_and_keep():
    assert Pattern.parse("cs256") == Pattern("cs256", g=8) and str(Pattern.parse("CS256:16")) == "cs256:16"
    with pytest.raises(PatternError, match="group size"):
        Pattern.parse("cs256:7")
    p = Pattern.parse("cs256")
    assert p.keep_per_group(3, 256, 0.6) == 104  # 256 − 153 = 103 → nearest multiple of 8
    assert p.keep_per_group(3, 704, 0.5) == 352
    assert tile_capacity(300, 8) == 296  # last tile of 44 holds at most 40


def _brute_value(s: torch.Tensor, keep: int, g: int) -> float:
    """max Σ scores over allocations of multiples of g to the tiles (each tile keeps its top c)."""
    tiles = [s[i : i + 256].sort(descending=True).values for i in range(0, s.numel(), 256)]
    best = float("-inf")
    for alloc in itertools.product(*[range(0, t.numel() - t.numel() % g + 1, g) for t in tiles]):
        if sum(alloc) == keep:
            best = max(best, sum(float(t[:c].sum()) for t, c in zip(tiles, alloc)))
    return best


@pytest.mark.parametrize("d,g,keep", [(300, 8, 120), (300, 16, 48), (520, 8, 264), (600, 8, 8)])
def test_chunk_greedy_is_exact_for_linear_objectives(d, g, keep):
    for seed in range(3):
        s = torch.randn(1, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        m = tile_chunk_topk(s, keep, g)
        assert int(m.sum()) == keep and (tile_counts(m) % g == 0).all()
        assert float(s[m].sum()) == pytest.approx(_brute_value(s[0], keep, g), rel=1e-12)


def test_chunk_greedy_refuses_impossible_budgets():
    with pytest.raises(PatternError, match="multiple"):
        tile_chunk_topk(torch.randn(2, 300), 12, 8)
    with pytest.raises(PatternError, match="at most"):
        tile_chunk_topk(torch.randn(2, 300), 304, 8)


def test_fw_lmo_respects_fixings_and_refuses_infeasible_ones():
    d = 300
    fixed = torch.zeros(2, d, dtype=torch.bool)
    fixed[:, 260:265] = True  # 5 fixed ones in the short tile → that tile keeps ≥ 8
    grad = torch.randn(2, d)
    v = TopKLMO("cs256", 48, fixed_one=fixed)(grad).bool()
    assert (v[fixed]).all() and (v.sum(1) == 48).all() and (tile_counts(v) % 8 == 0).all()
    zero = torch.zeros(2, d, dtype=torch.bool)
    zero[:, 256:260] = zero[:, 265:300] = True  # the short tile keeps its 5 fixed ones, cannot reach 8
    with pytest.raises(InfeasibleBounds):
        TopKLMO("cs256", 48, fixed_one=fixed, fixed_zero=zero)


def test_bnb_lmo_fixings():
    lmo = TileChunkLMO(300, 16, 8)
    lb, ub = torch.zeros(300).numpy(), torch.ones(300).numpy()
    lb[290] = 1.0
    v = lmo(torch.randn(300).numpy(), lb, ub)
    assert v[290] == 1 and v.sum() == 16 and v[256:].sum() % 8 == 0
    ub[256:] = 0.0
    assert not lmo.feasible(lb, ub)
    with pytest.raises(Infeasible):
        lmo(torch.zeros(300).numpy(), lb, ub)


METHODS = [("magnitude", {}), ("wanda", {}), ("ria", {}), ("sparsegpt", {}), ("dsnot", {}),
           ("sparsefw", {"iterations": 40}), ("sparseswaps", {}),
           ("sparseswaps", {"warm_start": "sparsefw", "warm_options": {"iterations": 20}}),
           ("exact", {"time_limit": 0.3, "rows": "0-1"})]


@pytest.mark.parametrize("name,opts", METHODS, ids=[f"{n}-{i}" for i, (n, _) in enumerate(METHODS)])
def test_every_method_fits_cs256(name, opts):
    p = _problem(rows=2, d=300, sparsity=0.6)
    sol = get_method(name, **opts).solve(p)
    assert p.is_feasible(sol.mask)
    assert (sol.mask.sum(1) == p.keep).all() and (tile_counts(sol.mask) % 8 == 0).all()
    if sol.weight is not None:
        assert (sol.weight[~sol.mask] == 0).all()


def test_swaps_improve_wanda_within_tiles_and_cs256_is_close_to_per_row():
    p = _problem(rows=3, d=512, sparsity=0.5)
    wanda = get_method("wanda").solve(p).mask
    swaps = get_method("sparseswaps").solve(p).mask
    assert (tile_counts(swaps) == tile_counts(wanda)).all()  # swaps stay inside tiles
    assert p.error(swaps) < p.error(wanda)
    q = LayerProblem(p.W, p.G, "per_row", 0.5)
    assert q.keep == p.keep
    assert p.error(wanda) <= 1.1 * q.error(get_method("wanda").solve(q).mask)
