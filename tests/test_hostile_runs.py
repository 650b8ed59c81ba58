"""Nothing lost: fine_tune's run folder is resumed only when it matches, and finished stays finished.

The CLI's run folder (`tltf train --out`) is tested in test_hostile_cli_runs.py.
"""

import hashlib

import numpy as np
import pytest
from _train_tiny import tiny_data, tiny_model

from tltf.training.recipe import fine_tune


def _digest(model) -> str:
    h = hashlib.sha256()
    for w in model.get_weights():
        h.update(np.ascontiguousarray(w).tobytes())
    return h.hexdigest()


def _files(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_resuming_a_finished_run_trains_nothing_and_gives_back_its_model(tmp_path):
    data = tiny_data()
    model = tiny_model()
    first = fine_tune(model, data, data, head_epochs=2, finetune_epochs=2,
                      unfreeze="top_blocks:1", directory=tmp_path, verbose=0)
    trained = _digest(model)
    accuracy = model.evaluate(data, verbose=0, return_dict=True)["accuracy"]
    on_disk = _files(tmp_path)

    fresh = tiny_model(seed=9)  # untrained weights, as a resumed process starts with
    again = fine_tune(fresh, data, data, head_epochs=2, finetune_epochs=2,
                      unfreeze="top_blocks:1", directory=tmp_path, resume=True, verbose=0)
    assert _digest(fresh) == trained
    assert fresh.evaluate(data, verbose=0, return_dict=True)["accuracy"] == accuracy
    assert again.history == first.history and again.best_epoch == first.best_epoch
    assert again.best_metrics == first.best_metrics
    assert _files(tmp_path) == on_disk  # nothing rewritten


def test_resume_refuses_another_class_order_or_count(tmp_path):
    data = tiny_data()
    fine_tune(tiny_model(class_names=["cat", "dog"]), data, data, head_epochs=1,
              finetune_epochs=0, directory=tmp_path, verbose=0)
    on_disk = _files(tmp_path)
    with pytest.raises(ValueError, match=r"class_names=\['cat', 'dog'\].*class_names=\['dog', 'cat'\]"):
        fine_tune(tiny_model(class_names=["dog", "cat"]), data, data, head_epochs=1,
                  finetune_epochs=1, directory=tmp_path, resume=True, verbose=0)

    from _train_tiny import NAME, SIZE

    from tltf.models.classifier import build_classifier

    three = build_classifier(NAME, 3, image_size=SIZE, weights=None)
    with pytest.raises(ValueError, match=r"Cannot resume the run in .*num_classes=2.*num_classes=3"):
        fine_tune(three, data, data, head_epochs=1, finetune_epochs=1, directory=tmp_path,
                  resume=True, verbose=0)
    assert _files(tmp_path) == on_disk


def test_a_new_run_never_silently_replaces_an_earlier_one(tmp_path):
    data = tiny_data()
    fine_tune(tiny_model(), data, data, head_epochs=1, finetune_epochs=0, directory=tmp_path,
              verbose=0)
    on_disk = _files(tmp_path)
    with pytest.raises(FileExistsError, match=r"holds the checkpoints of an earlier run.*resume=True"):
        fine_tune(tiny_model(), data, data, head_epochs=1, finetune_epochs=0, directory=tmp_path,
                  verbose=0)
    assert _files(tmp_path) == on_disk
    result = fine_tune(tiny_model(), data, data, head_epochs=1, finetune_epochs=0,
                       directory=tmp_path, overwrite=True, verbose=0)
    assert result.history["phase"] == [1]
