"""tltf.training.runtime: mixed precision, XLA choice, strategies, seeds (tiny models, CPU)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from tltf import build_classifier
from tltf.models import precision
from tltf.models.parts import backbone_of, head_of
from tltf.training import distribute, runtime

WORKER = Path(__file__).with_name("_worker.py")
REPO = Path(__file__).resolve().parents[1]
SIZE = 32
NO_GPU = not tf.config.list_physical_devices("GPU")
SIXTEEN_BIT = {"mixed_float16": "float16", "mixed_bfloat16": "bfloat16"}


def _tiny_backbone() -> keras.Model:
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Rescaling(1 / 255.0)(inputs)
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu", name="block1_conv")(x)
    x = keras.layers.BatchNormalization(name="block1_bn")(x)
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu", name="block2_conv")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, x, name="tiny")


def _tiny_classifier(**kwargs) -> keras.Model:
    return build_classifier(_tiny_backbone(), 2, image_size=SIZE, weights=None, **kwargs)


def _data(n=64, seed=0):
    """Dark images are class 0, bright ones class 1."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n).astype("int32")
    x = np.where(y[:, None, None, None] == 1, 180.0, 60.0) + rng.uniform(
        -40, 40, (n, SIZE, SIZE, 3)
    )
    return x.astype("float32"), y


def _all_layers(model: keras.Model):
    return [layer for layer in model._flatten_layers(include_self=False, recursive=True)]


# ---------------------------------------------------------------------------------------------
# resolve_mixed_precision


@pytest.mark.parametrize(
    "option, policy",
    [
        ("float32", "float32"),
        ("float16", "mixed_float16"),
        ("bfloat16", "mixed_bfloat16"),
        ("mixed_float16", "mixed_float16"),
        ("mixed_bfloat16", "mixed_bfloat16"),
    ],
)
def test_resolve_mixed_precision_explicit(option, policy):
    assert precision.resolve_mixed_precision(option) == policy


@pytest.mark.skipif(not NO_GPU, reason="checks the CPU answer of 'auto'")
def test_resolve_mixed_precision_auto_is_float32_on_cpu():
    assert precision.resolve_mixed_precision() == "float32"
    assert precision.resolve_mixed_precision("auto") == "float32"


@pytest.mark.parametrize("bad", ["fp16", "AUTO", "float64", "", None, 16, True])
def test_resolve_mixed_precision_rejects_unknown(bad):
    with pytest.raises(
        ValueError, match=r"'auto', 'float32', 'float16'.*Received: mixed_precision="
    ):
        precision.resolve_mixed_precision(bad)


# ---------------------------------------------------------------------------------------------
# dtype_policy_scope


def test_dtype_policy_scope_sets_and_restores():
    assert keras.config.dtype_policy().name == "float32"
    with precision.dtype_policy_scope("mixed_bfloat16"):
        assert keras.config.dtype_policy().name == "mixed_bfloat16"
        layer = keras.layers.Dense(2)
    assert layer.compute_dtype == "bfloat16" and layer.variable_dtype == "float32"
    assert keras.config.dtype_policy().name == "float32"


def test_dtype_policy_scope_restores_after_an_exception():
    with pytest.raises(RuntimeError, match="boom"):
        with precision.dtype_policy_scope("mixed_float16"):
            raise RuntimeError("boom")
    assert keras.config.dtype_policy().name == "float32"


def test_dtype_policy_scope_none_keeps_the_current_policy():
    keras.config.set_dtype_policy("mixed_bfloat16")  # the conftest fixture restores it
    with precision.dtype_policy_scope(None):
        assert keras.config.dtype_policy().name == "mixed_bfloat16"
    assert keras.config.dtype_policy().name == "mixed_bfloat16"


def test_dtype_policy_scope_rejects_unknown_policy():
    with pytest.raises(ValueError, match=r"Keras dtype policy name.*Received: policy='half'"):
        with precision.dtype_policy_scope("half"):
            pass
    assert keras.config.dtype_policy().name == "float32"


# ---------------------------------------------------------------------------------------------
# resolve_jit_compile, resolve_strategy, global_batch_size, is_chief


def test_resolve_jit_compile_passes_bools_through():
    assert precision.resolve_jit_compile(True) is True
    assert precision.resolve_jit_compile(False) is False


@pytest.mark.skipif(not NO_GPU, reason="checks the CPU answer of 'auto'")
def test_resolve_jit_compile_auto_is_off_on_cpu():
    assert precision.resolve_jit_compile() is False
    assert (
        precision.resolve_jit_compile("auto", strategy=tf.distribute.MirroredStrategy(["/cpu:0"]))
        is False
    )


@pytest.mark.parametrize("bad", ["yes", "xla", None, 1])
def test_resolve_jit_compile_rejects_unknown(bad):
    with pytest.raises(ValueError, match=r"True, False or 'auto'.*Received: jit_compile="):
        precision.resolve_jit_compile(bad)


def test_resolve_strategy_none_is_the_current_strategy():
    assert distribute.resolve_strategy(None) is tf.distribute.get_strategy()
    assert distribute.resolve_strategy().num_replicas_in_sync == 1
    mirrored = tf.distribute.MirroredStrategy(["/cpu:0"])
    assert distribute.resolve_strategy(mirrored) is mirrored
    with mirrored.scope():
        assert distribute.resolve_strategy(None) is mirrored


@pytest.mark.parametrize("bad", ["mirrored", 2, object()])
def test_resolve_strategy_rejects_non_strategies(bad):
    with pytest.raises(TypeError, match=r"tf.distribute.Strategy.*Received: strategy="):
        distribute.resolve_strategy(bad)


def test_global_batch_size_multiplies_by_replicas():
    assert distribute.global_batch_size(32) == 32
    mirrored = tf.distribute.MirroredStrategy(["/cpu:0"])
    assert distribute.global_batch_size(16, mirrored) == 16 * mirrored.num_replicas_in_sync


@pytest.mark.parametrize("bad", [0, -4, 2.5, "32", True, None])
def test_global_batch_size_rejects_bad_sizes(bad):
    with pytest.raises(ValueError, match=r"positive int.*Received: per_replica_batch_size="):
        distribute.global_batch_size(bad)


def test_is_chief_in_a_single_process():
    assert distribute.is_chief() is True
    assert distribute.is_chief(tf.distribute.MirroredStrategy(["/cpu:0"])) is True


def test_backup_and_restore_resumes_an_interrupted_fit(tmp_path):
    x, y = _data(32)
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((SIZE, SIZE, 3)), keras.layers.Flatten(), keras.layers.Dense(2)]
    )
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))

    class Interrupt(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                raise KeyboardInterrupt("simulated crash")

    backup = distribute.backup_and_restore(tmp_path / "backup")
    assert isinstance(backup, keras.callbacks.BackupAndRestore)
    with pytest.raises(KeyboardInterrupt):
        model.fit(x / 255, y, epochs=4, callbacks=[backup, Interrupt()], verbose=0)
    assert (tmp_path / "backup" / "latest.weights.h5").exists()

    seen = []
    record = keras.callbacks.LambdaCallback(on_epoch_begin=lambda epoch, logs: seen.append(epoch))
    fresh = keras.Sequential(
        [keras.Input((SIZE, SIZE, 3)), keras.layers.Flatten(), keras.layers.Dense(2)]
    )
    fresh.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    fresh.fit(
        x / 255,
        y,
        epochs=4,
        callbacks=[distribute.backup_and_restore(tmp_path / "backup"), record],
        verbose=0,
    )
    assert seen == [2, 3]  # resumed after the two finished epochs
    assert not (tmp_path / "backup").exists()  # removed once the run completed


# ---------------------------------------------------------------------------------------------
# mixed precision on a classifier


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_rebuild_with_policy_sets_every_layer_and_keeps_the_head_output_float32(policy):
    model = build_classifier("mobilenet_v2", 3, image_size=SIZE, weights=None)
    mixed = runtime.rebuild_with_policy(model, policy)
    assert keras.config.dtype_policy().name == "float32"  # no leaked global policy
    assert mixed is not model and mixed.name == model.name
    assert [layer.name for layer in mixed.layers] == [layer.name for layer in model.layers]

    head = head_of(mixed)
    checked = 0
    for layer in _all_layers(mixed):
        if isinstance(layer, keras.layers.InputLayer):
            continue
        if layer is head.predictions:
            assert layer.compute_dtype == "float32", layer.name
        else:
            assert layer.dtype_policy.name == policy, layer.name
            assert layer.compute_dtype == SIXTEEN_BIT[policy], layer.name
        checked += 1
    assert checked > 100  # every MobileNetV2 layer, not just the top ones
    assert all(w.dtype == "float32" for w in mixed.weights)  # variables stay float32
    for before, after in zip(model.get_weights(), mixed.get_weights(), strict=True):
        np.testing.assert_array_equal(before, after)
    # Frozen state carries over: the backbone is still frozen.
    assert backbone_of(mixed).trainable is False
    assert [w.name for w in mixed.trainable_weights] == [w.name for w in model.trainable_weights]

    images = np.random.default_rng(0).uniform(0, 255, (2, SIZE, SIZE, 3)).astype("float32")
    features = backbone_of(mixed)(mixed.get_layer("preprocessing")(images))
    assert features.dtype == SIXTEEN_BIT[policy]  # the body really computes in 16 bits
    scores = mixed(images)
    assert scores.dtype == "float32"
    np.testing.assert_allclose(np.sum(scores, axis=-1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(scores, model(images), atol=0.05)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_training_loss_falls(policy):
    keras.utils.set_random_seed(0)
    model = _tiny_classifier()
    backbone_of(model).trainable = True
    mixed = runtime.rebuild_with_policy(model, policy)
    mixed.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    # float16 needs loss scaling; Keras wraps the optimizer because the model's policy says so.
    is_scaled = isinstance(mixed.optimizer, keras.optimizers.LossScaleOptimizer)
    assert is_scaled is (policy == "mixed_float16")
    x, y = _data()
    history = mixed.fit(x, y, batch_size=16, epochs=5, verbose=0).history["loss"]
    assert all(np.isfinite(history))
    assert history[-1] < 0.7 * history[0]
    assert mixed.get_layer("backbone").get_layer("block1_conv").compute_dtype == SIXTEEN_BIT[policy]
    assert mixed.predict(x[:4], verbose=0).dtype == np.float32
    assert keras.config.dtype_policy().name == "float32"


def test_rebuild_with_policy_restores_the_global_policy_when_it_fails():
    class Subclassed(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(TypeError, match=r"functional keras.Model.*Received: model=Subclassed"):
        runtime.rebuild_with_policy(Subclassed(), "mixed_float16")
    with pytest.raises(ValueError, match=r"Received: policy='half'"):
        runtime.rebuild_with_policy(_tiny_classifier(), "half")
    assert keras.config.dtype_policy().name == "float32"


def test_match_runtime_returns_the_model_when_it_matches():
    model = _tiny_classifier()
    assert runtime.match_runtime(model) is model
    assert runtime.match_runtime(model, dtype_policy="float32") is model
    built_mixed = _tiny_classifier(dtype_policy="mixed_bfloat16")
    assert runtime.match_runtime(built_mixed, dtype_policy="mixed_bfloat16") is built_mixed
    rebuilt = runtime.match_runtime(model, dtype_policy="mixed_bfloat16")
    assert rebuilt is not model and rebuilt.dtype_policy.name == "mixed_bfloat16"
    assert runtime.match_runtime(rebuilt, dtype_policy="mixed_bfloat16") is rebuilt


def test_match_runtime_rebuilds_a_model_built_outside_the_strategy_scope():
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    model = _tiny_classifier()
    placed = runtime.match_runtime(model, strategy=strategy)
    assert placed is not model
    assert all(strategy.extended.variable_created_in_scope(w.value) for w in placed.weights)
    assert runtime.match_runtime(placed, strategy=strategy) is placed
    for before, after in zip(model.get_weights(), placed.get_weights(), strict=True):
        np.testing.assert_array_equal(before, after)
    with strategy.scope():
        placed.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    x, y = _data(32)
    assert np.isfinite(placed.fit(x, y, batch_size=16, epochs=1, verbose=0).history["loss"][0])


# ---------------------------------------------------------------------------------------------
# seeds


@pytest.mark.parametrize("bad", [-1, 1.5, "0", True, None])
def test_set_seed_rejects_bad_seeds(bad):
    with pytest.raises(ValueError, match=r"non-negative int.*Received: seed="):
        runtime.set_seed(bad, deterministic=False)


def test_set_seed_rejects_non_bool_deterministic():
    with pytest.raises(TypeError, match=r"Received: deterministic='yes'"):
        runtime.set_seed(0, deterministic="yes")


def test_set_seed_repeats_initial_weights():
    runtime.set_seed(7, deterministic=False)
    first = _tiny_classifier().get_weights()
    runtime.set_seed(7, deterministic=False)
    second = _tiny_classifier().get_weights()
    runtime.set_seed(8, deterministic=False)
    other = _tiny_classifier().get_weights()
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, c) for a, c in zip(first, other, strict=True))


def _repro(*seeds: int) -> list[dict]:
    # Op determinism cannot be turned off again, so it runs in processes of its own.
    pythonpath = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    proc = subprocess.run(
        [sys.executable, str(WORKER), "repro", *map(str, seeds)],
        env=dict(os.environ, PYTHONPATH=pythonpath, TF_CPP_MIN_LOG_LEVEL="2"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])["histories"]


@pytest.mark.slow
def test_two_seeded_deterministic_fine_tune_runs_give_the_same_history():
    first, other = _repro(3, 4)  # one process: seed 3, then seed 4
    (second,) = _repro(3)  # a second process: seed 3 again
    assert first["phase"] == [1, 2, 2]  # phase 1: one logistic-regression fit of the head
    assert first == second  # every logged value, bit for bit, across processes
    assert first["loss"] != other["loss"]  # the seed matters: the test can fail


@pytest.mark.parametrize("precision", ["float16", "bfloat16"])
def test_fine_tune_in_mixed_precision_leaves_no_global_policy(precision):
    from tltf.training.recipe import fine_tune

    keras.utils.set_random_seed(0)
    model = _tiny_classifier()
    before = [w.copy() for w in model.get_weights()]
    x, y = _data(32)
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    seen = []
    spy = keras.callbacks.LambdaCallback(
        on_train_begin=lambda logs: seen.append(
            (spy.model.dtype_policy.name, type(spy.model.optimizer).__name__)
        )
    )
    result = fine_tune(
        model,
        data,
        data,
        head_epochs=1,
        finetune_epochs=1,
        unfreeze="all",
        mixed_precision=precision,
        callbacks=[spy],
        verbose=0,
    )
    # Phase 2 trained a rebuilt copy in the 16-bit policy, loss-scaled for float16.
    policy, optimizer = seen[-1]
    assert policy == f"mixed_{precision}"
    assert (optimizer == "LossScaleOptimizer") is (precision == "float16")
    assert keras.config.dtype_policy().name == "float32"
    assert model.dtype_policy.name == "float32"  # the caller's model keeps its policy...
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights(), strict=True))
    assert all(np.isfinite(result.history["loss"]))  # ...and holds the mixed-precision weights
