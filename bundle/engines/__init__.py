"""Ignite engines the bundle adds: the 15-combination evaluation and the one-shot teacher election."""

from bundle.engines.election import ElectionEngine
from bundle.engines.evaluation import CombinationEvaluator

__all__ = ["CombinationEvaluator", "ElectionEngine"]
