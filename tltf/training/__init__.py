"""Training: `fine_tune` (head first, then the top blocks), freezing, `lr_find`, schedules,
checkpoints.

`tltf.training.runtime` and `tltf.training.distribute` hold the pieces a custom loop needs
to behave as `fine_tune` does (dtype rebuilds, strategies, seeds, multi-worker backups).
"""

from tltf.training.freeze import freeze_backbone, unfreeze
from tltf.training.lr_range import LRFindResult, lr_find
from tltf.training.recipe import FineTuneResult, fine_tune

__all__ = ["FineTuneResult", "LRFindResult", "fine_tune", "freeze_backbone", "lr_find", "unfreeze"]
