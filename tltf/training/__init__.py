"""Training: `fine_tune` (head first, then the top blocks), freezing, schedules, checkpoints.

`tltf.training.runtime` and `tltf.training.distribute` hold the pieces a custom loop needs
to behave as `fine_tune` does (dtype rebuilds, strategies, seeds, multi-worker backups).
"""

from tltf.training.freeze import freeze_backbone, unfreeze
from tltf.training.recipe import FineTuneResult, fine_tune

__all__ = ["FineTuneResult", "fine_tune", "freeze_backbone", "unfreeze"]
