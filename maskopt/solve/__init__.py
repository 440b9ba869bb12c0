"""The per-layer problem and its solvers: patterns, layer math, methods, Frank-Wolfe, branch-and-bound, swaps."""
