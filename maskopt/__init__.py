"""maskopt: post-training pruning of LLMs by optimization.

    >>> import maskopt
    >>> report = maskopt.prune(model, "calib.txt", maskopt.PruneConfig(method="wanda", sparsity=0.6), tokenizer=tok)
"""
from ._version import __version__

from .config import PruneConfig
from .solve.patterns import Pattern
from .pipeline import prune
from .solve.problem import LayerProblem, Solution


def evaluate(model, tokenizer, texts, **kwargs):
    """Perplexity per text file; see maskopt.perplexity.evaluate_texts."""
    from .perplexity import evaluate_texts

    return evaluate_texts(model, tokenizer, texts, **kwargs)


__all__ = ["LayerProblem", "Pattern", "PruneConfig", "Solution", "evaluate", "prune"]
