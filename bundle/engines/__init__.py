"""Ignite engines the bundle adds: the 15-combination evaluation and the one-shot teacher election."""

from bundle.engines.evaluation import CombinationEvaluator
from bundle.engines.one_shot_election import ElectionEngine

__all__ = ["CombinationEvaluator", "ElectionEngine"]
