"""maskopt: post-training pruning of LLMs by optimization."""
__version__ = "0.1.0"
