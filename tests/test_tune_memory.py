"""Memory over a search: the Keras session is cleared between trials, so no model survives."""

import gc

import keras
import pytest
from _tune_tiny import NAME, tiny_backbone, tiny_data

from tltf.tune.tuner import search

# Stated bound: resident memory after trial 10 exceeds that after trial 1 by at most 150 MiB.
# Measured here (TF 2.21, Keras 3.15): 839 -> 909 MiB, about 7 MiB per trial. That residue is
# Keras/TensorFlow's own: a bare `build; compile; fit; clear_session(); gc.collect()` loop
# grows ~4.5 MiB per fit on the same machine (keras-team/keras#17458, #20552), and no Keras
# model is left alive after a trial (checked below), so tltf holds nothing between trials.
RSS_GROWTH_BOUND_MB = 150


@pytest.mark.slow
def test_rss_after_ten_trials_stays_within_bound(tmp_path):
    tiny_backbone()
    data = tiny_data()
    gc.collect()
    # Other tests of the session may keep their own models alive; only the search's count.
    before = {id(o) for o in gc.get_objects() if isinstance(o, keras.Model)}
    result = search(data, data, backbone=NAME, num_classes=2, weights=None, tuner="random",
                    max_trials=10, directory=tmp_path, head_epochs=1, finetune_epochs=1,
                    batch_size=8, verbose=0, best_model=None, dropout=0.2,
                    label_smoothing=0.0, finetune_lr=(1e-5, 1e-2))
    rss = [r["rss_mb"] for r in result.trials_run]
    assert len(rss) == 10
    growth = rss[9] - rss[0]
    print(f"RSS after trial 1: {rss[0]:.0f} MiB, after trial 10: {rss[9]:.0f} MiB, "
          f"growth {growth:.0f} MiB; per trial: {[round(r) for r in rss]}")
    assert growth < RSS_GROWTH_BOUND_MB
    del result
    gc.collect()
    left = [o for o in gc.get_objects() if isinstance(o, keras.Model) and id(o) not in before]
    assert left == []
