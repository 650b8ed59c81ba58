"""Subprocess for tests/test_train_resume.py: a fine_tune run that may kill itself with SIGKILL.

    python tests/_train_worker.py <directory> full|kill|resume [adam|convex]

`kill` sends SIGKILL to its own process in the middle of phase 2 (second batch of the third
phase-2 epoch), after two phase-2 checkpoints were written. The last argument is `head_fit`
(default `adam`); a convex phase 1 makes no `fit` call, so phase 2 is then the first one. The last stdout line is a JSON
record of the run: merged history, optimizer iterations and a digest of the final weights.
"""

import json
import os
import signal
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import keras  # noqa: E402
import numpy as np  # noqa: E402
from _train_tiny import tiny_data, tiny_model  # noqa: E402

from tltf.training.recipe import fine_tune  # noqa: E402

HEAD_EPOCHS, FINETUNE_EPOCHS = 2, 4


class KillInPhase2(keras.callbacks.Callback):
    def __init__(self, phase2_fit):
        super().__init__()
        self.fits, self.phase2_fit = 0, phase2_fit

    def on_train_begin(self, logs=None):
        self.fits += 1

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.fits == self.phase2_fit and self.epoch == 2 and batch == 1:
            os.kill(os.getpid(), signal.SIGKILL)


def main(directory: str, mode: str, head_fit: str = "adam") -> None:
    model = tiny_model(seed=0)
    data = tiny_data(n=64, batch=16)
    callbacks = [KillInPhase2(2 if head_fit == "adam" else 1)] if mode == "kill" else []
    result = fine_tune(model, data, data, head_epochs=HEAD_EPOCHS, finetune_epochs=FINETUNE_EPOCHS,
                       head_fit=head_fit, unfreeze="all", early_stopping=False, directory=directory,
                       resume=mode == "resume", seed=0, callbacks=callbacks, verbose=0)
    history = {k: v for k, v in result.history.items() if k != "time"}
    weights = np.concatenate([w.ravel() for w in model.get_weights()]).astype("float64")
    print(json.dumps({
        "history": history,
        "iterations": int(model.optimizer.iterations.numpy()),
        "weights": weights.tolist(),
    }), flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
