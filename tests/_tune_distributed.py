"""One process of a distributed tltf search (chief or worker, from KERASTUNER_* variables).

Usage: python _tune_distributed.py <search directory> <output json> <max_trials>
Writes what `tltf.tune.tuner.search` returned in this process as JSON.
"""

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _tune_tiny import NAME, tiny_backbone, tiny_data  # noqa: E402

from tltf.tune.tuner import search  # noqa: E402


def main(directory: str, out: str, max_trials: int) -> None:
    tiny_backbone()
    chief = os.environ.get("KERASTUNER_TUNER_ID") == "chief"
    data = tiny_data()
    result = search(data, data, backbone=NAME, num_classes=2, weights=None, tuner="random",
                    max_trials=max_trials, directory=directory, head_epochs=1,
                    finetune_epochs=1, batch_size=8, verbose=0, dropout=0.2,
                    label_smoothing=0.0, best_model="restore" if chief else None)
    Path(out).write_text(json.dumps({
        "tuner_id": os.environ["KERASTUNER_TUNER_ID"],
        "trials": [{k: r.get(k) for k in ("trial_id", "status", "score", "unfreeze_blocks")}
                   for r in result.trials],
        "trials_run": [r["trial_id"] for r in result.trials_run],
        "best_model_source": result.best_model_source,
    }))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
