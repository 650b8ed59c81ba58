"""`tltf.lr_find` (the learning-rate range test) and `tltf lr-find`, on tiny models at 32 px."""

import json
import math

import keras
import numpy as np
import pytest
from test_cli import _make_folder, _one_line_error, _tltf

import tltf
from tltf.models.parts import backbone_of
from tltf.training.lr_range import _suggest

_TINY = dict(weights=None, image_size=32)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (32, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 2, 32)
    return x, y


def _trained_model(data):
    """A compiled model that has trained a little, so it has optimizer state and a non-zero head."""
    model = tltf.build_classifier("mobilenet_v2_035", 2, **_TINY, seed=0)
    tltf.unfreeze(model, "top_blocks:1")
    tltf.compile_classifier(model, learning_rate=1e-2)
    model.fit(data[0][:8], data[1][:8], batch_size=8, epochs=1, verbose=0)
    return model


def test_the_model_is_left_exactly_as_it_was(data):
    model = _trained_model(data)
    weights = [w.copy() for w in model.get_weights()]
    optimizer = model.optimizer
    slots = [v.numpy().copy() for v in optimizer.variables]
    flags = [layer.trainable for layer in backbone_of(model).layers]
    result = tltf.lr_find(model, data, phase=2, num_steps=10, batch_size=8, end_lr=1e3,
                          seed=0)
    assert result.lrs  # it did train (a copy)
    assert all(np.array_equal(a, b) for a, b in zip(weights, model.get_weights(), strict=True))
    assert model.optimizer is optimizer
    assert all(np.array_equal(a, v.numpy())
               for a, v in zip(slots, optimizer.variables, strict=True))
    assert flags == [layer.trainable for layer in backbone_of(model).layers]


def test_the_curve_and_the_suggestion(data, tmp_path):
    model = tltf.build_classifier("mobilenet_v2_035", 2, **_TINY, seed=0)
    result = tltf.lr_find(model, data, phase=1, num_steps=20, batch_size=8, start_lr=1e-5,
                          end_lr=1.0, seed=0)
    # 4 batches of data, cycled: 20 steps unless the loss diverged first.
    assert len(result.lrs) == len(result.losses) <= 20
    assert len(result.lrs) == 20 or result.diverged
    assert result.lrs[0] == pytest.approx(1e-5)
    assert all(b > a for a, b in zip(result.lrs, result.lrs[1:]))
    assert all(math.isfinite(v) for v in result.losses)
    assert result.suggestion == result.suggestions["valley"]
    assert result.suggestion in result.lrs and 1e-5 <= result.suggestion <= 1.0
    assert set(result.suggestions) == {"valley", "steep", "minimum"}
    path = result.plot(tmp_path / "plots" / "lr.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads(json.dumps(result.to_dict()))["suggestion"] == result.suggestion


def test_the_valley_rule_picks_the_middle_of_the_longest_descent():
    # Flat, then a steady descent from index 40 to 70, then a blow-up: fastai's trimming
    # drops the first 10 and last 5 points; the valley is the descent, the pick about half
    # way down it, the steepest point on it and the minimum at its bottom.
    lrs = list(np.logspace(-7, 1, 100))
    losses = [2.0] * 40 + list(np.linspace(2.0, 0.5, 31))[1:] + list(np.linspace(0.6, 9, 30))
    found = _suggest(lrs, losses, 100)
    assert lrs[50] <= found["valley"] <= lrs[60]
    assert lrs[39] <= found["steep"] <= lrs[70]
    assert found["minimum"] == pytest.approx(lrs[69] / 10)


def test_a_diverging_loss_stops_the_run(data):
    model = tltf.build_classifier("mobilenet_v2_035", 2, **_TINY, seed=0)
    result = tltf.lr_find(model, data, phase=1, num_steps=60, batch_size=8, start_lr=1e-3,
                          end_lr=1e6, seed=0)
    assert result.diverged and len(result.lrs) < 60
    assert result.losses[-1] > 4 * min(result.losses)


def test_phase_1_trains_the_head_and_phase_2_the_top_blocks(data, monkeypatch):
    from tltf.training import lr_range

    trained, compile_classifier = {}, lr_range.compile_classifier

    def compile_and_record(model, *args, **kwargs):  # what the copy trains, as compiled
        trained["paths"] = {v.path.split("/")[0] for v in model.trainable_weights}
        trained["bn"] = any(layer.trainable for layer in backbone_of(model).layers
                            if isinstance(layer, keras.layers.BatchNormalization))
        return compile_classifier(model, *args, **kwargs)

    monkeypatch.setattr(lr_range, "compile_classifier", compile_and_record)
    model = tltf.build_classifier("mobilenet_v2_035", 2, **_TINY, seed=0)
    tltf.unfreeze(model, "all")  # the caller's flags must not matter, nor change
    weights = model.get_weights()
    one = tltf.lr_find(model, data, phase=1, num_steps=10, batch_size=8, seed=0)
    assert one.unfrozen == [] and one.phase == 1
    assert trained["paths"] == {"head"}
    two = tltf.lr_find(model, data, phase=2, unfreeze="top_blocks:1", num_steps=10,
                       batch_size=8, seed=0)
    copy = keras.models.clone_model(model)
    assert two.unfrozen == tltf.unfreeze(copy, "top_blocks:1") and two.phase == 2
    assert trained["paths"] == {"head", *(n for n in two.unfrozen if backbone_of(copy)
                                          .get_layer(n).trainable_weights)}
    assert not trained["bn"]  # BatchNorm stays in inference mode
    assert backbone_of(model).layers[1].trainable  # the caller's model: as it was
    assert all(np.array_equal(a, b) for a, b in zip(weights, model.get_weights(), strict=True))


@pytest.mark.parametrize("kwargs, name", [
    (dict(phase=3), "phase"), (dict(phase=True), "phase"),
    (dict(unfreeze="top"), "unfreeze"),
    (dict(start_lr=0), "start_lr"), (dict(start_lr=1.0, end_lr=0.5), "end_lr"),
    (dict(num_steps=5), "num_steps"), (dict(batch_size=0), "batch_size"),
    (dict(label_smoothing=1.0), "label_smoothing"),
])
def test_bad_arguments_name_themselves(data, kwargs, name):
    model = tltf.build_classifier("mobilenet_v2_035", 2, **_TINY)
    with pytest.raises(ValueError, match=f"Received: {name}="):
        tltf.lr_find(model, data, **kwargs)


@pytest.mark.slow
def test_the_command_writes_the_plot_and_the_json(tmp_path):
    photos = _make_folder(tmp_path / "photos")
    tiny = ["--backbone", "mobilenet_v2_035", "--weights", "none", "--image-size", "32"]
    result = _tltf("lr-find", "--data", photos, *tiny, "--batch-size", "4", "--num-steps", "12",
                   "--plot", tmp_path / "lr.png", "--json", tmp_path / "lr.json")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "suggested learning rate (valley rule):" in result.stdout
    assert (tmp_path / "lr.png").read_bytes()[:4] == b"\x89PNG"
    saved = json.loads((tmp_path / "lr.json").read_text())
    assert saved["phase"] == 2 and saved["unfrozen"]
    assert f"{saved['suggestion']:.2e}" in result.stdout
    bad = _tltf("lr-find", "--data", photos, *tiny, "--unfreeze", "top")
    _one_line_error(bad, "Received: unfreeze='top'")
