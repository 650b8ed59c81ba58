"""Phase 1 as one convex fit (`fine_tune(head_fit=...)`): the head is scikit-learn's solution."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf
from _train_tiny import SIZE, tiny_backbone, tiny_data, tiny_model

from tltf.models.classifier import build_classifier
from tltf.models.heads import ClassificationHead
from tltf.models.parts import head_of
from tltf.training import _head_fit
from tltf.training.recipe import fine_tune


def _arrays(n=48, classes=3, noise=0.2, seed=0):
    """Images whose brightness says the class, with a share `noise` of labels drawn at random."""
    rng = np.random.default_rng(seed)
    y = (np.arange(n) % classes).astype("int32")
    x = rng.uniform(0, 120, (n, SIZE, SIZE, 3)) + (135 / max(classes - 1, 1)) * y[:, None, None, None]
    flip = rng.random(n) < noise
    y[flip] = rng.integers(0, classes, flip.sum())
    return x.astype("float32"), y


def _model(classes, seed=0, **kwargs):
    tiny_backbone()
    return build_classifier("train_tiny", classes, image_size=SIZE, weights=None, seed=seed,
                            **kwargs)


def _features(model, x):
    return keras.Model(model.inputs, head_of(model).input).predict(x, verbose=0)


def _sklearn_probabilities(features, y, x_eval, class_weight=None, seed=0):
    """StandardScaler + LogisticRegressionCV as the benchmark's probe fits it, folds as tltf's."""
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    folds = min(5, int(np.bincount(y).min()))
    fit = make_pipeline(StandardScaler(), LogisticRegressionCV(
        Cs=np.logspace(-4, 4, 10), cv=StratifiedKFold(folds, shuffle=True, random_state=seed),
        solver="lbfgs", scoring="neg_log_loss", max_iter=5000, class_weight=class_weight,
        **_head_fit._l2_only()))
    with threadpool_limits(limits=1, user_api="blas"):  # many BLAS threads are slow here
        return fit.fit(features.astype("float64"), y).predict_proba(x_eval)


def _fit(classes, head_fit="auto", class_weight=None, seed=0):
    x, y = _arrays(classes=classes)
    model = _model(classes, seed=seed)
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)  # cached in this order
    result = fine_tune(model, data, head_epochs=2, finetune_epochs=0, head_fit=head_fit,
                       class_weight=class_weight, seed=seed, verbose=0)
    features = _features(model, x)
    tltf_p = np.asarray(head_of(model)(features, training=False))
    return result, tltf_p, _sklearn_probabilities(features, y, features, class_weight, seed)


@pytest.mark.parametrize("classes", [2, 3])
def test_convex_head_is_the_cross_validated_logistic_regression(classes):
    result, tltf_p, sklearn_p = _fit(classes)
    assert result.head_fit == "convex" and result.history["phase"] == [1]
    assert result.head_c in np.logspace(-4, 4, 10)
    # Binary: scikit-learn's one logit for class 1 became the head's 2-class softmax.
    np.testing.assert_allclose(tltf_p, sklearn_p, atol=2e-4)


def test_the_comparison_with_scikit_learn_can_fail():
    # Adam epochs do not reach the regularised optimum: the same check must fail.
    result, tltf_p, sklearn_p = _fit(3, head_fit="adam")
    assert result.head_fit == "adam"
    with pytest.raises(AssertionError):
        np.testing.assert_allclose(tltf_p, sklearn_p, atol=2e-4)


def test_class_weight_is_respected():
    weights = {0: 1.0, 1: 6.0}
    result, tltf_p, sklearn_p = _fit(2, class_weight=weights)
    np.testing.assert_allclose(tltf_p, sklearn_p, atol=2e-4)
    _, unweighted, _ = _fit(2)
    assert tltf_p[:, 1].mean() > unweighted[:, 1].mean() + 0.05  # the weight changed the head


def test_fit_linear_head_folds_the_standardisation_into_the_dense_layer():
    # Features on very different scales, one of them constant: the head takes them raw.
    rng = np.random.default_rng(1)
    y = np.arange(60) % 3
    x = rng.normal(0, 1, (60, 5)) * [1, 100, 0.01, 0, 5] + y[:, None] * [1, 50, 0.01, 0, 0]
    x[:, 3] = 7.0
    head = ClassificationHead(3)
    head.build((None, 5))
    assert _head_fit.fit_linear_head(head, x, y, seed=0) in np.logspace(-4, 4, 10)
    p = np.asarray(head(x.astype("float32"), training=False))
    np.testing.assert_allclose(p, _sklearn_probabilities(x, y, x), atol=2e-4)


@pytest.mark.parametrize("build, kwargs, reason", [
    (dict(hidden_units=4), {}, "hidden layer"),
    (dict(multi_label=True), {}, "multi-label"),
    (dict(augment=["flip", "rotation"]), {}, "augmentation layer"),
    ({}, dict(cache_features=False), "cache_features=False"),
    ({}, dict(head_fit="adam"), None),
])
def test_adam_keeps_every_other_case(build, kwargs, reason):
    x, y = _arrays(32, classes=2, noise=0.0)
    labels = np.eye(2, dtype="float32")[y] if build.get("multi_label") else y
    data = tf.data.Dataset.from_tensor_slices((x, labels)).batch(16)
    result = fine_tune(_model(2, **build), data, head_epochs=2, finetune_epochs=0, verbose=0,
                       **kwargs)
    assert result.head_fit == "adam" and result.history["phase"] == [1, 1]
    if reason is not None:
        kwargs = {**kwargs, "head_fit": "convex"}
        with pytest.raises(ValueError, match=f"`head_fit='convex'`.*{reason}"):
            fine_tune(_model(2, **build), data, head_epochs=2, finetune_epochs=0, verbose=0,
                      **kwargs)


def test_several_workers_keep_adam(monkeypatch):
    from tltf.training import distribute

    model = tiny_model()
    strategy = tf.distribute.get_strategy()
    assert _head_fit.plan("auto", model, True, strategy) == "convex"
    # What a worker of a two-worker cluster is told (tests/test_sharding.py checks the count).
    monkeypatch.setattr(distribute, "worker_shard", lambda strategy=None: (2, 1))
    assert _head_fit.plan("auto", model, True, strategy) == "adam"
    with pytest.raises(ValueError, match="several workers"):
        _head_fit.plan("convex", model, True, strategy)


def test_a_class_with_one_image_keeps_adam():
    x, y = _arrays(17, classes=2, noise=0.0)
    y[:] = 0
    y[0] = 1  # one image of class 1: no fold can hold it out and train on it
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    result = fine_tune(tiny_model(), data, head_epochs=2, finetune_epochs=0, verbose=0)
    assert result.head_fit == "adam"
    with pytest.raises(ValueError, match="class 1 has 1 training image"):
        fine_tune(tiny_model(), data, head_epochs=2, finetune_epochs=0, head_fit="convex",
                  verbose=0)


def test_convex_phase_1_is_one_checkpointed_row_that_resume_picks_up(tmp_path, capsys):
    data, val = tiny_data(), tiny_data(seed=1)
    model = tiny_model()
    first = fine_tune(model, data, val, head_epochs=3, finetune_epochs=0, directory=tmp_path,
                      verbose=2)
    assert "phase 1 logistic regression, C " in capsys.readouterr().out
    h = first.history
    assert h["phase"] == [1] and h["phase_epoch"] == [0] and first.head_fit == "convex"
    assert set(h) == {"epoch", "phase", "phase_epoch", "loss", "accuracy", "val_loss",
                      "val_accuracy", "learning_rate", "time"}  # an Adam epoch's keys
    assert h["learning_rate"] == [0.0] and first.head_c > 0
    assert first.best_epoch == 0 and first.best_metrics["val_accuracy"] == h["val_accuracy"][0]
    state = json.loads((tmp_path / "checkpoints" / "state.json").read_text())
    assert state["phase_done"]["1"] and state["epochs_done"]["1"] == 1
    assert (tmp_path / "checkpoints" / "phase1.npz").exists()
    assert (tmp_path / "checkpoints" / "best.npz").exists()
    convex_head = [w.copy() for w in head_of(model).get_weights()]

    # A fresh process: its model has a random head; phase 2 must start from the saved one.
    fresh = tiny_model(seed=5)
    assert not np.allclose(head_of(fresh).get_weights()[0], convex_head[0])
    again = fine_tune(fresh, data, val, head_epochs=3, finetune_epochs=1, finetune_lr=1e-12,
                      directory=tmp_path, resume=True, verbose=0)
    assert again.history["phase"] == [1, 2] and again.head_fit == "convex"
    assert again.head_c == first.head_c
    for a, b in zip(head_of(fresh).get_weights(), convex_head, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_the_best_epoch_can_be_the_convex_head():
    data, val = tiny_data(), tiny_data(seed=1)

    class Sabotage(keras.callbacks.Callback):
        # Phase 2 is the only `fit`: flip the head's sign after its first epoch.
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 1:
                for w in head_of(model).weights:
                    w.assign(-10.0 * w)

    model = tiny_model()
    result = fine_tune(model, data, val, head_epochs=3, finetune_epochs=4, finetune_lr=1e-7,
                       early_stopping=False, callbacks=[Sabotage()], verbose=0)
    assert result.history["phase"] == [1, 2, 2, 2, 2]
    assert result.best_epoch == 0 and result.history["val_accuracy"][-1] < 0.5
    model.compile(loss=model.loss, metrics=["accuracy"])
    metrics = model.evaluate(val, verbose=0, return_dict=True)
    assert metrics["accuracy"] == pytest.approx(result.best_metrics["val_accuracy"])


def test_a_run_config_names_head_fit_like_fine_tune(tmp_path):
    from tltf.runs.train import _check_arguments

    (tmp_path / "data").mkdir()
    config = {"data": {"path": str(tmp_path / "data")}, "model": {}, "export": {},
              "train": {"head_fit": "convex"}}
    _check_arguments(config)  # the `train` section maps onto fine_tune's arguments
    config["train"]["head_fit"] = "lbfgs"
    with pytest.raises(ValueError, match=r"`head_fit` must be one of .*head_fit='lbfgs'"):
        _check_arguments(config)


@pytest.mark.parametrize("images, with_val, head_fit, phases", [
    (32, False, "auto", [1]),  # 16 a class, no validation: the fitted head stays
    (32, True, "auto", [1, 2, 2]),  # validation data: early stopping guards phase 2
    (32, False, "adam", [1, 1, 2, 2]),  # an Adam head gains from phase 2
    (200, False, "auto", [1, 2, 2]),  # 100 a class
])
def test_finetune_epochs_auto_skips_phase_2_only_on_small_data_without_validation(
        images, with_val, head_fit, phases, monkeypatch, capsys):
    from tltf.training import recipe

    monkeypatch.setattr(recipe, "FINETUNE_EPOCHS", 2)  # the rule, not the number, is tested
    data = tiny_data(n=images, batch=32)
    result = fine_tune(tiny_model(), data, data if with_val else None, head_epochs=2,
                       head_fit=head_fit, verbose=2)
    assert result.history["phase"] == phases
    assert ("phase 2 skipped (finetune_epochs='auto')" in capsys.readouterr().out) == (
        phases == [1])
    # An int is obeyed whatever the data.
    result = fine_tune(tiny_model(), data, head_epochs=2, finetune_epochs=1, verbose=0)
    assert result.history["phase"][-1] == 2


def test_resuming_a_run_whose_phase_2_auto_skipped_trains_nothing(tmp_path):
    data = tiny_data()
    model = tiny_model()
    first = fine_tune(model, data, head_epochs=2, directory=tmp_path, verbose=0)
    assert first.history["phase"] == [1]
    fresh = tiny_model(seed=5)
    again = fine_tune(fresh, data, head_epochs=2, directory=tmp_path, resume=True, verbose=0)
    assert again.history == first.history and again.head_c == first.head_c
    for a, b in zip(fresh.get_weights(), model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
