"""maskopt: post-training pruning of LLMs by optimization.

    >>> import maskopt
    >>> report = maskopt.prune(model, "calib.txt", maskopt.PruneConfig(method="wanda", sparsity=0.6), tokenizer=tok)
"""
import os as _os

# OpenMP threads that busy-wait make small tensor ops up to 40× slower when another process shares the cores
# (measured: SparseSwaps on the tiny model, 2 threads, load 4.5: 13 s vs 0.33 s per layer). Sleeping waiters
# cost nothing measurable on an idle machine. Only effective when torch is not imported yet; a user's own
# setting wins.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from ._version import __version__  # noqa: E402

from .config import PruneConfig
from .solve.patterns import Pattern
from .recipe import Recipe, oneshot
from .run.job import prune, run_on
from .solve.problem import LayerProblem, Solution


def evaluate(model, tokenizer, texts, **kwargs):
    """Perplexity per text file; see maskopt.perplexity.evaluate_texts."""
    from .perplexity import evaluate_texts

    return evaluate_texts(model, tokenizer, texts, **kwargs)


__all__ = ["LayerProblem", "Pattern", "PruneConfig", "Solution", "Recipe", "evaluate", "oneshot", "prune", "run_on"]
