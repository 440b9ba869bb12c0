"""Exact 1-swap refinement of a mask, all rows in parallel (pure tensor functions).

``pairs``: Δ of one swap and the exhaustive searches; ``screening``: the screened exact search; ``block``:
several exact swaps per iteration; ``refine``: the local search with one strategy per pattern.

Per row, with w the weights, r = w ⊙ (1 − m) the pruned part and c = G r, swapping p (pruned → kept)
with u (kept → pruned) changes the error rᵀ G r by

    Δ(p, u) = a_p + b_u − 2 w_p w_u G_pu,   a_p = w_p² G_pp − 2 w_p c_p,   b_u = w_u² G_uu + 2 w_u c_u,

and afterwards c ← c − w_p G[:, p] + w_u G[:, u]. Only c changes between iterations.

**Screened search (exact).** Let ρ_j = max_{v≠j} |G_jv| / √(G_jj G_vv) and h_j = √(ρ_j G_jj); then
|G_pu| ≤ min(ρ_p, ρ_u) √(G_pp G_uu) ≤ h_p h_u for every p ≠ u (this uses only the entries of G, not
that G is PSD). With σ_j = |w_j| h_j and 2σ_pσ_u ≤ σ_p² + σ_u² (AM-GM):

    Δ(p, u) ≥ (a_p − σ_p²) + (b_u − σ_u²) =: α_p + β_u.

The bound is separable, so all pairs with α_p + β_u ≤ τ form a staircase of the two sorted lists:
for the j-th smallest α, the β's below τ − α_j are a prefix (one ``searchsorted``). A probe of the
16 × 16 pairs with the smallest α and β gives τ (the best Δ seen); Δ is evaluated exactly on the
staircase only (tiles of 4 consecutive p's sharing the longest prefix; how few pairs that is on real
layers: bench/results/swaps_speed.md), so the returned pair is the
exact minimizer of the same Δ formula, with the same operation order and tie rule (smallest p, then
u), as the exhaustive search. α and β are deflated by 16·eps·(|a| + 2σ²) (resp. b) so that rounding
can never screen out a pair whose computed Δ is ≤ τ.

**Several swaps per iteration (per-row patterns).** After the search, each row that improves gets a
candidate block: its best pair plus the 63 pruned p with the smallest α_p and the 63 kept u with the
smallest β_u (the bound's terms). ``block_swaps`` applies the best pair, then repeatedly the best
pair of the block among unused indices (selected in working precision, then evaluated in float64 from
the float64 c of the block, which is updated exactly after every swap: c_S ← c_S − w_p G[p, S] +
w_u G[u, S]), up to ``swaps_per_iter`` per row, while that exact Δ is below −threshold. Each applied
swap is therefore the row's true best 1-swap (the first) or an exactly evaluated improving one given
the swaps before it; the tracked error is exact (float64) and never increases. N:M patterns take the
best pairs of several blocks of M (disjoint by construction) and accept them greedily with their exact
cross terms (``accept_swaps``): candidate j is taken when its change given the accepted ones,
Δ_j + Σ_l 2 δ_lᵀ G δ_j (δ = −w_p e_p + w_u e_u), is below −threshold.

**Thresholds.** In working precision with unit roundoff ε the computed Δ(p, u) is off by at most
≈ 2ε(s_p + s_u + √e)² (s_j = |w_j|√G_jj, |c_p| ≤ √G_pp √e by Cauchy–Schwarz, e the row error), so
changes above −noise_i = −4ε(2 max_j s_j + √e_i)² are indistinguishable from zero: a row whose best
Δ ≥ −noise_i is 1-swap optimal ("converged"). A row also stops ("stopped early") when its best
Δ > −tol · ē, ē = (Σ errors of the rows passed in) / rows: the swap would lower the layer error by
less than tol / rows of it. Swaps are accepted when Δ < −max(noise_i, tol · ē).

Per-row patterns search all (pruned, kept) pairs of the row; N:M searches pairs inside each block
of M (exhaustively: that is only M·d pairs per row) and applies the best pairs of several blocks; cs256
searches pairs inside each tile of 256 inputs only (exhaustively; a swap keeps every tile's count, so its
multiple of g), one swap per row and iteration.
"""
from .block import accept_swaps, block_swaps
from .pairs import (DEFAULT_SWAPS_PER_ITER, DEFAULT_TOL, best_swaps_nm, best_swaps_per_row, memory_cap_bytes,
                    pair_bound_factors, swap_costs, swap_delta)
from .refine import SwapResult, swap_refine
from .screening import SearchStats, screened_swaps_per_row

__all__ = [
    "DEFAULT_SWAPS_PER_ITER", "DEFAULT_TOL", "SearchStats", "SwapResult", "accept_swaps", "best_swaps_nm",
    "best_swaps_per_row", "block_swaps", "memory_cap_bytes", "pair_bound_factors", "screened_swaps_per_row",
    "swap_costs", "swap_delta", "swap_refine",
]
