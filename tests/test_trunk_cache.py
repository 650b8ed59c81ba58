"""Phase 2 on a cached trunk (`fine_tune(trunk_cache=...)`): the same training, cheaper."""

import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from _train_tiny import tiny_arrays, tiny_model

from tltf.data import _cache_choice
from tltf.models.classifier import build_classifier
from tltf.models.parts import backbone_of
from tltf.training import _phases, _train_data, _trunk
from tltf.training.recipe import fine_tune

FAST = dict(head_epochs=0, batch_size=32, seed=0, early_stopping=False, verbose=0,
            finetune_lr=1e-2)


def _with_moving_stats(model, seed=1):
    """Moving statistics far from BatchNorm's defaults (mean 0, variance 1), so a BatchNorm
    layer that ran in training mode (batch statistics) would change the numbers."""
    rng = np.random.default_rng(seed)
    for layer in backbone_of(model).layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.moving_mean.assign(rng.normal(0, 0.5, layer.moving_mean.shape))
            layer.moving_variance.assign(rng.uniform(0.2, 3.0, layer.moving_variance.shape))
    return model


def _train_both(make, data, val=None, **kwargs):
    """The same model trained twice, on the full model and on the cached trunk."""
    results = {}
    for option in (False, True):
        model = _with_moving_stats(make())
        before = [w.copy() for w in model.get_weights()]
        result = fine_tune(model, data, val, trunk_cache=option, **kwargs)
        results[option] = (model, before, result)
    return results


def _assert_same_weights(a, b):
    for wa, wb, va in zip(a.get_weights(), b.get_weights(), a.weights, strict=True):
        np.testing.assert_allclose(wa, wb, rtol=1e-5, atol=1e-6, err_msg=va.path)


@pytest.mark.parametrize("unfreeze, cut", [("top_blocks:1", "block2_relu"),
                                           ("top_blocks:2", "block1_relu")])
def test_cached_trunk_trains_the_weights_full_model_training_does(unfreeze, cut):
    # One batch an epoch: the order of the images cannot matter, so both runs take the very
    # same gradient steps, and any difference is the trunk cache's. No validation data, so
    # the models end with their last weights, not the best ones.
    runs = _train_both(tiny_model, tiny_arrays(32), finetune_epochs=3, unfreeze=unfreeze, **FAST)
    (full, before, plain), (cached, _, result) = runs[False], runs[True]
    assert plain.trunk_cache is None and result.trunk_cache == cut
    np.testing.assert_allclose(result.history["loss"], plain.history["loss"], rtol=1e-5)
    _assert_same_weights(cached, full)
    # The full model's own layers trained (no copies): above the cut and the head moved,
    # below it nothing did, and no BatchNorm statistic moved anywhere.
    moved = {v.path for v, w0, w in zip(cached.weights, before, cached.get_weights(), strict=True)
             if not np.array_equal(w0, w)}
    top = int(unfreeze[-1])
    blocks = [f"block{i}_conv" for i in range(4 - top, 4)]
    assert moved == {v.path for v in cached.trainable_weights}
    assert all(any(b in path for b in blocks) or "head" in path for path in moved), moved
    assert any("kernel" in path and blocks[0] in path for path in moved)
    assert cached.optimizer.iterations.numpy() == 3  # the full model holds phase 2's optimizer
    images = tiny_arrays(8, seed=5)[0]
    np.testing.assert_allclose(cached.predict(images, verbose=0), full.predict(images, verbose=0),
                               rtol=1e-5, atol=1e-6)


def test_the_comparison_can_fail_a_trunk_with_batchnorm_in_training_mode_trains_otherwise(
        monkeypatch):
    # The counter-test of the one above: the same run, but the trunk computed with the frozen
    # BatchNorm layers in training mode (batch statistics), ends elsewhere.
    model = _with_moving_stats(tiny_model())
    bns = [layer for layer in backbone_of(model).layers
           if isinstance(layer, keras.layers.BatchNormalization)]

    class TrainingModeBN:
        def __init__(self, extractor):
            self.extractor = extractor

        def __call__(self, images):
            for layer in bns:
                layer.trainable = True
            try:
                return self.extractor(images, training=True)
            finally:
                for layer in bns:
                    layer.trainable = False

    monkeypatch.setattr(_trunk, "_Extractor", TrainingModeBN)
    full = _with_moving_stats(tiny_model())
    kwargs = dict(FAST, finetune_epochs=3, unfreeze="top_blocks:1")
    fine_tune(full, tiny_arrays(32), trunk_cache=False, **kwargs)
    assert fine_tune(model, tiny_arrays(32), trunk_cache=True, **kwargs).trunk_cache
    with pytest.raises(AssertionError):
        _assert_same_weights(model, full)


@pytest.mark.slow
def test_mobilenet_v2_top_blocks_2_cuts_at_block_14_add_and_trains_the_same():
    def make():
        keras.utils.set_random_seed(0)
        return build_classifier("mobilenet_v2", 2, image_size=32, weights=None, dropout=0.0)

    model = make()
    cut, _ = _trunk.plan("auto", model, "top_blocks:2", False, tf.distribute.get_strategy())
    assert cut.layer == "block_14_add" and tuple(cut.tensor.shape[1:]) == (1, 1, 160)
    x, y = tiny_arrays(8)
    runs = _train_both(make, (x, y), (x, y), finetune_epochs=2, unfreeze="top_blocks:2",
                       **{**FAST, "batch_size": 8})
    assert runs[True][2].trunk_cache == "block_14_add"
    for key in ("loss", "val_loss"):
        np.testing.assert_allclose(runs[True][2].history[key], runs[False][2].history[key],
                                   rtol=1e-5)
    _assert_same_weights(runs[True][0], runs[False][0])
    # A cut inside a residual block is refused: its add also reads the block's input.
    with pytest.raises(ValueError, match="trunk_cache=True.*more than one tensor"):
        _trunk.plan(True, model, "from:block_15_project_BN", False, tf.distribute.get_strategy())


@pytest.mark.parametrize("head_fit", ["adam", "convex"])
def test_one_pass_through_the_frozen_trunk_serves_both_phases(monkeypatch, head_fit):
    # With phase 1's features cached and phase 2 on the cached trunk, the images go through
    # the frozen trunk once: phase 1's features are the layers above the cut run on the
    # stored trunk outputs. The run trains as one that computes its features from the images
    # (trunk_cache=False); BatchNorm statistics far from their defaults make a pass in
    # training mode, or through the wrong layers, show. One batch an epoch, so that the two
    # phase 2s (their images in different orders) take the same steps.
    passes, real = [], _train_data.features

    def counted(extract, ds, label="", *args, **kwargs):
        passes.append(label)
        return real(extract, ds, label, *args, **kwargs)

    monkeypatch.setattr(_train_data, "features", counted)
    data = tiny_arrays(32)
    kwargs = dict(head_epochs=2, head_fit=head_fit, finetune_epochs=3, unfreeze="top_blocks:1",
                  batch_size=32, seed=0, early_stopping=False, verbose=0)
    runs = {}
    for option in (True, False):
        passes.clear()
        model = _with_moving_stats(tiny_model())
        runs[option] = (model, fine_tune(model, data, data, trunk_cache=option, **kwargs))
        what = "trunk outputs" if option else "features"
        assert passes == [f"phase 1: caching training {what}",
                          f"phase 1: caching validation {what}"], option
    (shared, result), (plain, expected) = runs[True], runs[False]
    assert result.trunk_cache == "block2_relu" and result.cached_features
    assert result.history["phase"] == expected.history["phase"]
    for key in ("loss", "val_loss", "val_accuracy"):
        np.testing.assert_allclose(result.history[key], expected.history[key], rtol=1e-5,
                                   err_msg=key)
    _assert_same_weights(shared, plain)

    # A phase 2 that will not run (no validation data, a convex head, few images a class:
    # finetune_epochs="auto" is 0 there) gets no trunk pass: phase 1 reads the images.
    passes.clear()
    skipped = fine_tune(tiny_model(), data, head_fit="convex", unfreeze="top_blocks:1",
                        batch_size=16, seed=0, verbose=0)
    assert skipped.history["phase"] == [1] and passes == ["phase 1: caching training features"]


def test_a_flip_alone_is_cached_as_both_views_and_every_epoch_draws_one():
    assert _train_data.mirrored(tiny_model(augment="flip"))
    assert _train_data.mirrored(tiny_model(augment=[("flip", {"mode": "horizontal"})]))
    for other in (None, "light", "vertical_flip", [("flip", {"mode": "horizontal_and_vertical"})]):
        assert not _train_data.mirrored(tiny_model(augment=other)), other
    x, y = tiny_arrays(64)

    def first_rows(images):  # the first row of the first channel: a mirror reverses it
        return images[:, 0, :, 0]

    out = _train_data.cache_outputs(first_rows, tiny_model(), (x, y), None, 16, 0, 0, "t",
                                    "rows", mirror=True)
    np.testing.assert_array_equal(out.x, x[:, 0, :, 0])
    np.testing.assert_array_equal(out.x_mirror, x[:, 0, ::-1, 0])
    views = {r.tobytes(): (i, 0) for i, r in enumerate(out.x)}
    views.update({r.tobytes(): (i, 1) for i, r in enumerate(out.x_mirror)})
    epochs = []
    for _ in range(3):
        drawn = [(views[r.tobytes()], int(label)) for rows, labels in out.train
                 for r, label in zip(rows.numpy(), labels.numpy(), strict=True)]
        assert sorted(i for (i, _), _ in drawn) == list(range(64))  # every image, once
        assert all(label == y[i] for (i, _), label in drawn)
        mirrored = {i for (i, view), _ in drawn if view}
        assert 16 <= len(mirrored) <= 48  # about half: a fair coin, 64 times
        epochs.append(mirrored)
    assert epochs[0] != epochs[1] != epochs[2]  # a new draw every epoch


@pytest.mark.parametrize("head_fit", ["adam", "convex"])
def test_a_flip_model_trains_on_cached_features_and_trunk(monkeypatch, head_fit):
    # Before, any augmentation layer meant full-model epochs in both phases. A lone flip now
    # keeps both caches; with every draw forced to the image as it is, the run is the one of
    # the same model without augmentation (the layer has no weights). One batch an epoch.
    data = tiny_arrays(32)
    kwargs = dict(head_epochs=2, head_fit=head_fit, finetune_epochs=2, unfreeze="top_blocks:1",
                  batch_size=32, seed=0, early_stopping=False, verbose=0)
    flip = fine_tune(_with_moving_stats(tiny_model(augment="flip")), data, data, **kwargs)
    assert flip.cached_features and flip.trunk_cache == "block2_relu"
    assert flip.head_fit == head_fit and flip.history["phase"][-2:] == [2, 2]
    if head_fit == "convex":
        return  # the fit is on both views: no draw to force
    monkeypatch.setattr(tf.data.Dataset, "random", staticmethod(
        lambda seed=None, rerandomize_each_iteration=None:
            tf.data.Dataset.from_tensors(tf.constant(0, tf.int64)).repeat()))
    forced = _with_moving_stats(tiny_model(augment="flip"))
    plain = _with_moving_stats(tiny_model())
    a = fine_tune(forced, data, data, **kwargs)
    b = fine_tune(plain, data, data, **kwargs)
    np.testing.assert_allclose(a.history["loss"], b.history["loss"], rtol=1e-5)
    _assert_same_weights(forced, plain)
    with pytest.raises(AssertionError):  # and the real draws train otherwise
        np.testing.assert_allclose(flip.history["loss"], b.history["loss"], rtol=1e-5)


def test_auto_falls_back_with_augmentation_and_true_raises():
    x, y = tiny_arrays(32)
    model = tiny_model(augment="light")
    result = fine_tune(model, (x, y), finetune_epochs=1, unfreeze="top_blocks:1", **FAST)
    assert result.trunk_cache is None and result.history["phase"] == [2]
    with pytest.raises(ValueError, match=r"trunk_cache=True.*augmentation layer.*"
                                         r"Received: trunk_cache=True"):
        fine_tune(tiny_model(augment="light"), (x, y), finetune_epochs=1, trunk_cache=True,
                  **FAST)


def test_true_raises_where_nothing_is_frozen_or_a_frozen_layer_is_random():
    x, y = tiny_arrays(16)
    with pytest.raises(ValueError, match="trunk_cache=True.*nothing below the unfrozen"):
        fine_tune(tiny_model(), (x, y), finetune_epochs=1, unfreeze="all", trunk_cache=True,
                  **FAST)
    inputs = keras.Input((32, 32, 3))
    h = keras.layers.Conv2D(4, 3, name="conv1")(inputs)
    h = keras.layers.Dropout(0.5, name="drop")(h)
    h = keras.layers.Conv2D(4, 3, name="conv2")(h)
    net = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(h))
    model = build_classifier(net, 2, dropout=0.0)
    with pytest.raises(ValueError, match="frozen layer 'drop' \\(Dropout\\) runs at random"):
        fine_tune(model, (x, y), finetune_epochs=1, unfreeze="from:conv2", trunk_cache=True,
                  **FAST)
    result = fine_tune(model, (x, y), finetune_epochs=1, unfreeze="from:conv2", **FAST)
    assert result.trunk_cache is None
    with pytest.raises(ValueError, match="`trunk_cache` must be True, False or 'auto'"):
        fine_tune(tiny_model(), (x, y), trunk_cache="yes")


def test_outputs_that_fit_neither_memory_nor_disk_fall_back_with_a_warning(monkeypatch):
    monkeypatch.setattr(_cache_choice, "MEMORY_FRACTION", 1e-12)
    monkeypatch.setattr(_cache_choice, "DISK_FRACTION", 1e-12)
    x, y = tiny_arrays(16)
    with pytest.warns(UserWarning, match="trunk_cache='auto' trains phase 2 on the full model: "
                                         "the trunk outputs of 32 images take"):
        result = fine_tune(tiny_model(), (x, y), (x, y), finetune_epochs=1,
                           unfreeze="top_blocks:1", **FAST)
    assert result.trunk_cache is None and result.history["phase"] == [2]
    with pytest.raises(ValueError, match="trunk_cache=True.*more than"):
        fine_tune(tiny_model(), (x, y), finetune_epochs=1, unfreeze="top_blocks:1",
                  trunk_cache=True, **FAST)


def test_resume_in_phase_2_on_the_cached_trunk_matches_an_unbroken_run(tmp_path, capsys,
                                                                        monkeypatch):
    data = tiny_arrays(64)
    kwargs = dict(FAST, batch_size=16, finetune_epochs=4, unfreeze="top_blocks:1", verbose=2)
    unbroken = tiny_model()
    expected = fine_tune(unbroken, data, data, directory=tmp_path / "a", **kwargs)
    assert expected.trunk_cache == "block2_relu"
    assert "phase 2: caching the frozen trunk's output at block2_relu" in capsys.readouterr().out

    # The process stops right after phase 2's second epoch is checkpointed, as a kill would
    # (a callback of ours cannot do it: callbacks make fine_tune train the full model).
    saved = _phases._FullModelCheckpoint.on_epoch_end

    def save_then_stop(self, epoch, logs=None):
        saved(self, epoch, logs)
        if epoch == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(_phases._FullModelCheckpoint, "on_epoch_end", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        fine_tune(tiny_model(), data, data, directory=tmp_path / "b", **kwargs)
    monkeypatch.undo()
    ckpt = tmp_path / "b" / "checkpoints"
    state = json.loads((ckpt / "state.json").read_text())
    assert state["phase"] == 2 and state["epochs_done"]["2"] == 2
    # The checkpoint holds the full model's weights, frozen trunk included: it loads into a
    # plain full model.
    plain = tiny_model(seed=3)
    plain.load_weights(str(ckpt / state["weights_file"]))
    np.testing.assert_array_equal(plain.get_weights()[0], tiny_model(seed=0).get_weights()[0])

    # Another seed, so only what the checkpoint restores, before the trunk is computed, can
    # give the unbroken run's numbers (its frozen convolutions differ from the run's).
    resumed_model = tiny_model(seed=7)
    resumed = fine_tune(resumed_model, data, data, directory=tmp_path / "b", resume=True,
                        **kwargs)
    assert resumed.trunk_cache == "block2_relu"
    assert resumed.history["phase"] == [2, 2, 2, 2]
    np.testing.assert_allclose(resumed.history["loss"], expected.history["loss"], rtol=1e-5)
    assert resumed_model.optimizer.iterations.numpy() == 4 * 4
    _assert_same_weights(resumed_model, unbroken)


_MIRRORED = """
import json, sys
import numpy as np
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
sys.path.insert(0, {tests!r})
from _train_tiny import tiny_arrays, tiny_model
from tltf.training.recipe import fine_tune
out = {{}}
for option in (False, True):
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        model = tiny_model()
    result = fine_tune(model, tiny_arrays(32), head_epochs=0, finetune_epochs=3,
                       unfreeze="top_blocks:1", trunk_cache=option, batch_size=16, seed=0,
                       early_stopping=False, verbose=0, finetune_lr=1e-2, strategy=strategy)
    out[str(option)] = [result.trunk_cache,
                        np.concatenate([w.ravel() for w in model.get_weights()]).tolist()]
print(json.dumps(out))
"""


@pytest.mark.slow
def test_a_mirrored_strategy_trains_the_same_on_the_cached_trunk():
    # Two replicas need two logical CPUs, set before TensorFlow starts: a new process.
    script = _MIRRORED.format(tests=str(Path(__file__).parent))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=600, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["False"][0] is None and out["True"][0] == "block2_relu"
    np.testing.assert_allclose(out["True"][1], out["False"][1], rtol=1e-5, atol=1e-6)


def test_callbacks_keep_the_full_model_in_phase_2():
    # A callback (a tuner's checkpoint, a user's ModelCheckpoint) must see the whole model.
    model, seen = tiny_model(), []

    class Record(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen.append(self.model.name)

    result = fine_tune(model, tiny_arrays(32), None, head_epochs=1, finetune_epochs=1,
                       unfreeze="top_blocks:1", callbacks=[Record()], verbose=0, seed=0)
    assert result.trunk_cache is None and seen[-1] == model.name
    with pytest.raises(ValueError, match="callbacks were passed"):
        fine_tune(tiny_model(), tiny_arrays(32), None, head_epochs=1, finetune_epochs=1,
                  unfreeze="top_blocks:1", callbacks=[Record()], trunk_cache=True, verbose=0)
