"""A run folder's lifecycle (create, lock, resume, finish) and `train_run`, which the CLI calls."""

from tltf.runs.folder import RunFolder
from tltf.runs.train import train_run

__all__ = ["RunFolder", "train_run"]
