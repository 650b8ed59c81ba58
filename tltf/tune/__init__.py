"""Tuning: a KerasTuner search over unfreeze depth, learning rates and head settings."""

from tltf.tune.hypermodel import TransferHyperModel
from tltf.tune.tuner import SearchResult, plot_search, search

__all__ = ["SearchResult", "TransferHyperModel", "plot_search", "search"]
