"""tltf.training.recipe.fine_tune on a tiny registered backbone: phases, BatchNorm, caching, safety."""

import json
import math

import keras
import numpy as np
import pytest
import tensorflow as tf
from _train_tiny import tiny_arrays, tiny_data, tiny_model

from tltf.models.parts import backbone_of, head_of
from tltf.training.recipe import FineTuneResult, fine_tune
from tltf.training.schedules import DiscriminativeAdam, scaled_learning_rate, warmup_cosine


def _bn_stats(model):
    return [keras.ops.convert_to_numpy(v) for layer in backbone_of(model).layers
            if isinstance(layer, keras.layers.BatchNormalization)
            for v in (layer.moving_mean, layer.moving_variance)]


def test_two_phases_merged_history_and_result(tmp_path):
    model = tiny_model()
    data = tiny_data()
    result = fine_tune(model, data, data, head_epochs=2, finetune_epochs=2, unfreeze="top_blocks:1",
                       head_fit="adam", directory=tmp_path, verbose=0)
    assert isinstance(result, FineTuneResult) and result.model is model
    h = result.history
    assert h["phase"] == [1, 1, 2, 2] and h["epoch"] == [0, 1, 2, 3]
    assert h["phase_epoch"] == [0, 1, 0, 1]
    assert {"loss", "accuracy", "val_loss", "val_accuracy", "learning_rate", "time"} <= set(h)
    assert result.monitor == "val_accuracy"
    best = int(np.argmax(h["val_accuracy"]))  # first epoch reaching the maximum
    assert result.best_epoch == best
    assert result.best_metrics["val_accuracy"] == h["val_accuracy"][best]
    assert result.cached_features
    assert (result.log_dir / "history.csv").read_text().count("\n") == 5
    assert (result.checkpoint_dir / "state.json").exists()
    assert not list(result.checkpoint_dir.glob(".tmp-*"))
    # Phase 2 got its own optimizer: its step count covers phase 2 only (2 epochs x 2 steps).
    assert int(model.optimizer.iterations.numpy()) == 4


def test_phase_2_leaves_batchnorm_statistics_unchanged_and_trains_the_top():
    model = tiny_model()
    data = tiny_data()
    before = _bn_stats(model)
    kernels = {n: keras.ops.convert_to_numpy(backbone_of(model).get_layer(n).kernel) for n in ("block1_conv", "block3_conv")}
    fine_tune(model, data, head_epochs=0, finetune_epochs=1, unfreeze="top_blocks:1", verbose=0)
    for a, b in zip(before, _bn_stats(model), strict=True):
        np.testing.assert_array_equal(a, b)
    backbone = backbone_of(model)
    np.testing.assert_array_equal(kernels["block1_conv"], keras.ops.convert_to_numpy(backbone.get_layer("block1_conv").kernel))
    assert not np.allclose(kernels["block3_conv"], keras.ops.convert_to_numpy(backbone.get_layer("block3_conv").kernel))


def test_train_bn_true_does_move_batchnorm_statistics():
    # The counterpart of the test above: shows that it would catch BN in training mode.
    model = tiny_model()
    before = _bn_stats(model)
    fine_tune(model, tiny_data(), head_epochs=0, finetune_epochs=1, unfreeze="all", train_bn=True,
              verbose=0)
    assert any(not np.allclose(a, b) for a, b in zip(before, _bn_stats(model), strict=True))


def test_either_phase_can_be_skipped():
    data = tiny_data()
    model = tiny_model()
    result = fine_tune(model, data, data, head_epochs=2, finetune_epochs=0, verbose=0)
    assert result.history["phase"] == [1]  # the head fitted convexly: one row
    assert not any(layer.trainable for layer in backbone_of(model).layers)
    result = fine_tune(tiny_model(), data, data, head_epochs=0, finetune_epochs=1, verbose=0)
    assert result.history["phase"] == [2]


def test_cached_head_training_matches_training_the_full_model():
    # One batch per epoch, so the order of examples cannot matter; dropout 0.
    x, y = tiny_arrays(32)
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(32)

    def counted(passes):
        """`data`, adding 1 to `passes` each time it is read through."""
        def read():
            passes.append(1)
            yield from data.as_numpy_iterator()

        return tf.data.Dataset.from_generator(read, output_signature=data.element_spec).apply(
            tf.data.experimental.assert_cardinality(1))

    weights = tiny_model().get_weights()
    heads, reads = [], []
    for cache in (True, False):
        model = tiny_model()
        model.set_weights(weights)
        train_passes, val_passes = [], []
        result = fine_tune(model, counted(train_passes), counted(val_passes), head_epochs=4,
                           finetune_epochs=0, cache_features=cache, head_fit="adam", verbose=0)
        assert result.cached_features is cache
        heads.append((result.history, [keras.ops.convert_to_numpy(w) for w in head_of(model).weights]))
        reads.append((len(train_passes), len(val_passes)))
    np.testing.assert_allclose(heads[0][0]["loss"], heads[1][0]["loss"], rtol=1e-5)
    np.testing.assert_allclose(heads[0][0]["val_accuracy"], heads[1][0]["val_accuracy"])
    for a, b in zip(heads[0][1], heads[1][1], strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    # The backbone features were computed once: the cached run read each split in one pass
    # where the full model read it in each of its 4 epochs (both also read it once before).
    (cached_train, cached_val), (full_train, full_val) = reads
    assert full_train - cached_train == 3 and full_val - cached_val == 3, reads


def test_augmentation_in_the_model_uses_the_plain_path():
    # (A horizontal flip alone is cached exactly: tests/test_trunk_cache.py.)
    model = tiny_model(augment=["flip", "rotation"], seed=0)
    result = fine_tune(model, tiny_data(), head_epochs=1, finetune_epochs=0, verbose=0)
    assert not result.cached_features
    with pytest.raises(ValueError, match="has an augmentation layer"):
        fine_tune(model, tiny_data(), cache_features=True, verbose=0)


def test_early_stopping_stops_the_phase_and_restores_the_best_weights():
    data = tiny_data()

    class Sabotage(keras.callbacks.Callback):
        # In phase 2, flip the head's sign after the first epoch: accuracy collapses.
        def __init__(self):
            super().__init__()
            self.fits = 0

        def on_train_begin(self, logs=None):
            self.fits += 1

        def on_epoch_begin(self, epoch, logs=None):
            if self.fits == 2 and epoch == 1:
                for w in head_of(model).weights:
                    w.assign(-10.0 * w)

    model = tiny_model()
    result = fine_tune(model, data, data, head_epochs=3, finetune_epochs=6, finetune_lr=1e-7,
                       early_stopping=2, callbacks=[Sabotage()], head_fit="adam", verbose=0)
    phases = result.history["phase"]
    assert phases.count(2) == 2  # no improvement in 2 epochs: phase 2 stopped early
    assert result.best_epoch < len(phases) - 1
    model.compile(loss=model.loss, metrics=["accuracy"])
    metrics = model.evaluate(data, verbose=0, return_dict=True)
    assert metrics["accuracy"] == pytest.approx(result.best_metrics["val_accuracy"])


def test_nonfinite_loss_stops_with_a_clear_message_and_keeps_checkpoints(tmp_path):
    data = tiny_data()

    class Poison(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.fits = 0

        def on_train_begin(self, logs=None):
            self.fits += 1

        def on_epoch_begin(self, epoch, logs=None):
            if self.fits == 2 and epoch == 1:
                head_of(model).weights[0].assign(np.full(head_of(model).weights[0].shape, np.nan))

    model = tiny_model()
    with pytest.raises(FloatingPointError, match=r"`loss` became nan in phase 2, epoch 2"):
        fine_tune(model, data, data, head_epochs=1, finetune_epochs=3, directory=tmp_path,
                  callbacks=[Poison()], head_fit="adam", verbose=0)
    state = json.loads((tmp_path / "checkpoints" / "state.json").read_text())
    assert state["phase"] == 2 and state["epochs_done"]["2"] == 1
    assert all(math.isfinite(row["loss"]) for row in state["rows"])
    assert (tmp_path / "checkpoints" / state["weights_file"]).exists()
    assert (tmp_path / "checkpoints" / "best.npz").exists()
    assert all(np.isfinite(w).all() for w in model.get_weights())


def test_seed_gives_the_same_history():
    histories = []
    for _ in range(2):
        model = tiny_model(seed=1, dropout=0.3)
        data = tf.data.Dataset.from_tensor_slices(tiny_arrays(32)).shuffle(32, seed=3).batch(8)
        result = fine_tune(model, data, data, head_epochs=2, finetune_epochs=1, seed=7, verbose=0)
        histories.append({k: v for k, v in result.history.items() if k != "time"})
    assert histories[0] == histories[1]


def test_discriminative_lr_and_class_weight():
    model = tiny_model()
    data = tiny_data()
    fine_tune(model, data, head_epochs=1, finetune_epochs=1, unfreeze="all", discriminative_lr=0.5,
              class_weight={0: 1.0, 1: 3.0}, verbose=0)
    optimizer = model.optimizer
    assert isinstance(optimizer, DiscriminativeAdam)
    factors = {path.split("/")[-2]: f for path, f in optimizer.lr_multipliers.items()
               if path.endswith("kernel")}
    assert factors["block3_conv"] == 0.5 and factors["block2_conv"] == 0.25
    assert factors["block1_conv"] == 0.125


def test_resume_continues_a_finished_phase_1(tmp_path):
    data = tiny_data()
    model = tiny_model()
    fine_tune(model, data, data, head_epochs=2, finetune_epochs=0, head_fit="adam",
              directory=tmp_path, verbose=0)
    result = fine_tune(tiny_model(seed=5), data, data, head_epochs=2, finetune_epochs=1,
                       head_fit="adam", directory=tmp_path, resume=True, verbose=0)
    assert result.history["phase"] == [1, 1, 2]


def test_schedules():
    assert scaled_learning_rate(1e-3, 128) == pytest.approx(2e-3)
    schedule = warmup_cosine(1e-3, 100)
    assert float(schedule(0)) == 0.0
    assert float(schedule(10)) == pytest.approx(1e-3)
    assert float(schedule(100)) == pytest.approx(0.0, abs=1e-9)
    assert float(warmup_cosine(1e-3, 1)(0)) == pytest.approx(1e-3)


@pytest.mark.parametrize("kwargs, match", [
    ({"head_epochs": -1}, "`head_epochs` must be an int >= 0"),
    ({"finetune_epochs": 1.5}, "`finetune_epochs` must be an int >= 0"),
    ({"batch_size": 0}, "`batch_size` must be an int >= 1"),
    ({"label_smoothing": 1.0}, r"`label_smoothing` must be in \[0, 1\)"),
    ({"head_lr": 0}, "`head_lr` must be 'auto' or a positive float"),
    ({"finetune_lr": "fast"}, "`finetune_lr` must be 'auto' or a positive float"),
    ({"early_stopping": -1}, "`early_stopping` must be True, False or a patience"),
    ({"discriminative_lr": 2.0}, r"`discriminative_lr` must be None or a factor in \(0, 1\]"),
    ({"cache_features": "yes"}, "`cache_features` must be True, False or 'auto'"),
    ({"head_fit": "lbfgs"}, r"`head_fit` must be one of \('auto', 'convex', 'adam'\)"),
    ({"resume": True}, "`resume=True` needs the `directory`"),
    ({"unfreeze": "top_blocks:x"}, "integer N >= 1"),
    ({"class_weight": [1, 2]}, "`class_weight` must be None, 'balanced' or a dict"),
    ({"class_weight": "balanced"}, "only a tltf.ImageDataset has"),
])
def test_bad_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        fine_tune(tiny_model(), tiny_data(), **kwargs)


def test_bad_data_raises(tmp_path):
    model = tiny_model()
    x, y = tiny_arrays(8)
    with pytest.raises(TypeError, match="must be a tltf.ImageDataset or a batched"):
        fine_tune(model, [x, y])  # a tuple (x, y) is accepted, as by evaluate and verify
    with pytest.raises(ValueError, match="batch it with"):
        fine_tune(model, tf.data.Dataset.from_tensor_slices((x, y)))
    with pytest.raises(ValueError, match="The training dataset is infinite"):
        fine_tune(model, tiny_data().repeat(), verbose=0)
    with pytest.raises(ValueError, match="no checkpoint in"):
        fine_tune(model, tiny_data(), directory=tmp_path, resume=True)


def test_schedule_errors():
    with pytest.raises(ValueError, match="`total_steps` must be a positive integer"):
        warmup_cosine(1e-3, 0)
    with pytest.raises(ValueError, match=r"`warmup_fraction` must be in \[0, 1\)"):
        warmup_cosine(1e-3, 10, warmup_fraction=1.0)
    with pytest.raises(ValueError, match="`base` must be a positive learning rate"):
        scaled_learning_rate(0.0, 32)
    with pytest.raises(ValueError, match="`batch_size` must be a positive integer"):
        scaled_learning_rate(1e-3, 0)


def test_unfreeze_auto_takes_four_blocks_with_validation_data_and_two_without():
    import tltf

    x = np.random.default_rng(0).uniform(0, 255, (64, 32, 32, 3)).astype("float32")
    y = np.array([0, 1] * 32)
    cuts, trainable, moved = {}, {}, {}
    for val in (None, (x, y)):
        model = tltf.build_classifier("mobilenet_v2", 2, image_size=32, weights=None, seed=0)
        layers = [layer for layer in backbone_of(model).layers if layer.weights]
        before = [[keras.ops.convert_to_numpy(w) for w in layer.weights] for layer in layers]
        result = fine_tune(model, (x, y), val, head_epochs=0, finetune_epochs=2, verbose=0)
        key = "val" if val else "none"
        cuts[key] = result.trunk_cache
        trainable[key] = next(layer.name for layer in layers if layer.trainable)
        moved[key] = {layer.name.split("_")[1] for layer, old in zip(layers, before, strict=True)
                      if any(not np.array_equal(o, keras.ops.convert_to_numpy(w))
                             for o, w in zip(old, layer.weights, strict=True))}
    assert cuts == {"none": "block_14_add", "val": "block_12_add"}
    # Two blocks under Conv_1 without validation data, four with it; nothing below trained.
    assert trainable == {"none": "block_15_expand", "val": "block_13_expand"}
    assert moved["none"] <= {"15", "16", "1"} and "16" in moved["none"]
    assert moved["val"] <= {"13", "14", "15", "16", "1"} and "13" in moved["val"]
    with pytest.raises(ValueError, match="unfreeze"):
        fine_tune(tltf.build_classifier("mobilenet_v2", 2, image_size=32, weights=None),
                  (x, y), unfreeze="auto:4", verbose=0)
