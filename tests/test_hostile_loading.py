"""A `.keras` file or run config from a stranger runs no code and cannot flood the terminal.

The hostile model is built for real: a SavedModel whose graph writes a marker file, used as
the hub backbone of a tltf classifier and saved as `.keras`. Every loading path must refuse it
in safe mode (the marker stays unwritten) and load it once the caller opts in.
"""

import hashlib
import json
import re
import time
import zipfile
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import tltf
from tltf.backbones.hub import HubLayer
from tltf.cli import main
from tltf.runs.config import load_config
from tltf.training.runtime import rebuild_with_policy

KNOWN = "https://tfhub.dev/google/imagenet/mobilenet_v2_100_224/feature_vector/4"
REMOTE = "https://example.com/models/evil/1"


def _writes_marker(path: Path, marker: Path, width: int = 4) -> str:
    """Saves a SavedModel whose graph writes `marker` whenever it runs; returns its path."""

    class Evil(tf.Module):
        def __init__(self):
            self.w = tf.Variable(tf.ones([3, width]))

        @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3])])
        def __call__(self, x):
            tf.io.write_file(str(marker), "the SavedModel graph ran")
            return tf.reduce_mean(x, [1, 2]) @ self.w

    tf.saved_model.save(Evil(), str(path))
    return str(path)


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """(folder, .keras path, hub handle, marker, the model as built in this process)."""
    folder = tmp_path_factory.mktemp("hostile")
    marker = folder / "marker.txt"
    handle = _writes_marker(folder / "hub_model", marker)
    model = tltf.build_classifier(f"hub:{handle}", 2, image_size=32)
    model.save(folder / "model.keras")
    images = folder / "photos"
    for name in ("a", "b"):
        (images / name).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(np.full((32, 32, 3), 60 * i, "uint8")).save(images / name / f"{i}.png")
    return folder, folder / "model.keras", handle, marker, model


@pytest.fixture
def marker(hostile):
    path = hostile[3]
    path.unlink(missing_ok=True)
    yield path
    path.unlink(missing_ok=True)


def _cli_error(capsys, argv):
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert code == 1, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("tltf: error:")]
    assert len(lines) == 1, err
    return lines[0]


def _with_config(source: Path, target: Path, edit) -> Path:
    """Copies a `.keras` archive, passing its config through `edit(config)`."""
    with zipfile.ZipFile(source) as zin, zipfile.ZipFile(target, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            if item.filename == "config.json":
                data = json.dumps(edit(json.loads(data))).encode()
            zout.writestr(item, data)
    return target


def _replace(config, old: str, new: str):
    text = json.dumps(config)
    assert old in text
    return json.loads(text.replace(old, new))


# Refusal -------------------------------------------------------------------------------------


def test_keras_load_model_refuses_and_runs_nothing(hostile, marker):
    _, path, handle, _, _ = hostile
    with pytest.raises(ValueError, match=re.escape(f"Received: handle={handle!r}")) as error:
        keras.saving.load_model(path)
    message = str(error.value)
    assert "\n" not in message
    assert "would run the SavedModel's graph" in message
    assert "safe_mode=False" in message and "trust_hub_handles" in message
    with pytest.raises(ValueError, match="would run the SavedModel's graph"):
        tltf.load_model(path)
    assert not marker.exists()


@pytest.mark.parametrize("command", ["predict", "evaluate", "export"])
def test_cli_refuses_and_names_the_flag(hostile, marker, command, capsys, tmp_path):
    folder, path, handle, _, _ = hostile
    extra = {"predict": [folder / "photos" / "a" / "0.png"], "evaluate": [folder / "photos"],
             "export": [tmp_path / "model.tflite"]}[command]
    line = _cli_error(capsys, [command, path, *extra])
    assert f"'{handle}'" in line and "--trust-model-code" in line
    assert "would run that SavedModel's graph" in line
    assert not marker.exists()
    assert not (tmp_path / "model.tflite").exists()


def test_relative_handle_beside_the_file_is_refused(tmp_path, monkeypatch, capsys):
    # The stranger ships hub_model/ next to model.keras; the user runs tltf in that folder.
    monkeypatch.chdir(tmp_path)
    marker = tmp_path / "marker.txt"
    _writes_marker(tmp_path / "hub_model", marker)
    model = keras.Sequential([keras.Input((32, 32, 3)), HubLayer("hub_model"),
                              keras.layers.Dense(2)])
    model.save("model.keras")
    marker.unlink()
    line = _cli_error(capsys, ["predict", "model.keras", "x.png"])
    assert "'hub_model'" in line and "--trust-model-code" in line
    with pytest.raises(ValueError, match=r"Received: handle='hub_model'"):
        keras.saving.load_model("model.keras")
    assert not marker.exists()
    # Trust names the directory however it is spelled.
    loaded = tltf.load_model("model.keras", trust_hub_handles=[str(tmp_path / "hub_model")])
    assert loaded.predict(np.zeros((1, 32, 32, 3)), verbose=0).shape == (1, 2)
    assert marker.exists()


def test_unknown_remote_handle_is_refused_before_any_download(hostile, tmp_path, monkeypatch,
                                                              capsys):
    monkeypatch.setenv("TFHUB_CACHE_DIR", str(tmp_path / "cache"))
    path = _with_config(hostile[1], tmp_path / "remote.keras",
                        lambda config: _replace(config, hostile[2], REMOTE))
    with pytest.raises(ValueError, match=re.escape(f"Received: handle={REMOTE!r}")):
        keras.saving.load_model(path)
    line = _cli_error(capsys, ["predict", path, "x.png"])
    assert REMOTE in line and "--trust-model-code" in line
    assert not (tmp_path / "cache").exists()
    # A megabyte-long handle still gives a short message.
    huge = _with_config(hostile[1], tmp_path / "huge.keras",
                        lambda config: _replace(config, hostile[2], REMOTE + "x" * 1_000_000))
    assert len(_cli_error(capsys, ["predict", huge, "x.png"])) < 1000


def test_hub_backbone_name_in_another_model_is_refused(hostile, marker, tmp_path):
    # A plain model whose preprocessing layer names the hostile SavedModel as its backbone:
    # `spec_of` (used by fine_tune and unfreeze) would load it, so loading the file refuses.
    model = tltf.build_classifier("mobilenet_v2_035", 2, image_size=32, weights=None)
    model.save(tmp_path / "plain.keras")

    path = _with_config(tmp_path / "plain.keras", tmp_path / "renamed.keras",
                        lambda config: _replace(config, '"backbone_name": "mobilenet_v2_035"',
                                                f'"backbone_name": "hub:{hostile[2]}"'))
    with pytest.raises(ValueError, match=re.escape(f"Received: handle={hostile[2]!r}")):
        tltf.load_model(path)
    assert not marker.exists()


def test_lambda_layer_is_refused_with_the_cli_flag(tmp_path, capsys):
    model = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Lambda(lambda x: x * 2)])
    model.save(tmp_path / "lambda.keras")
    line = _cli_error(capsys, ["predict", tmp_path / "lambda.keras", "x.png"])
    assert "--trust-model-code" in line and "lambda" in line


def test_trust_hub_handles_must_be_a_list(hostile):
    with pytest.raises(TypeError, match="wrap a single one in a list"):
        tltf.load_model(hostile[1], trust_hub_handles=hostile[2])


# Opting in -----------------------------------------------------------------------------------


def test_opt_in_loads_and_predicts(hostile, marker, capsys):
    folder, path, handle, _, model = hostile
    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    expected = model.predict(x, verbose=0)
    for loaded in (keras.saving.load_model(path, safe_mode=False),
                   tltf.load_model(path, safe_mode=False),
                   tltf.load_model(path, trust_hub_handles=[handle])):
        np.testing.assert_allclose(loaded.predict(x, verbose=0), expected, rtol=1e-5, atol=1e-5)
    assert marker.exists()
    code = main(["predict", str(path), str(folder / "photos" / "a" / "0.png"),
                 "--trust-model-code"])
    assert code == 0, capsys.readouterr().err
    assert "0.png" in capsys.readouterr().out


def test_own_model_reloads_only_with_opt_in_but_clones_in_memory(hostile, marker):
    # The user built this model in this process. Saving and reloading it goes through the
    # file, so the rule applies (the message tells them so); cloning in memory loads nothing
    # new and is never refused, also where Keras deserializes the nested backbone.
    _, path, _, _, model = hostile
    with pytest.raises(ValueError, match="also when you saved the model yourself"):
        keras.saving.load_model(path)
    with pytest.raises(ValueError, match="would run the SavedModel's graph"):
        keras.models.model_from_json(model.to_json())
    x = np.zeros((1, 32, 32, 3), "float32")
    for clone in (keras.models.clone_model(model),
                  keras.Model.from_config(model.get_config()),
                  rebuild_with_policy(model, "float32")):
        assert clone.predict(x, verbose=0).shape == (1, 2)


def test_known_handle_loads_in_safe_mode(tmp_path, monkeypatch):
    # A well-known tfhub.dev handle, served from the hub cache (no network).
    cache = tmp_path / "cache"
    marker = tmp_path / "marker.txt"
    _writes_marker(cache / hashlib.sha1(KNOWN.encode()).hexdigest(), marker)
    monkeypatch.setenv("TFHUB_CACHE_DIR", str(cache))
    model = keras.Sequential([keras.Input((32, 32, 3)), HubLayer(KNOWN), keras.layers.Dense(2)])
    model.save(tmp_path / "known.keras")
    loaded = keras.saving.load_model(tmp_path / "known.keras")
    assert loaded.layers[0].handle == KNOWN


# Run configs ---------------------------------------------------------------------------------


def _bomb(path: Path) -> Path:
    lines, previous = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]'], "a"
    for name in "bcdefghi":
        lines.append(f"{name}: &{name} [{', '.join(['*' + previous] * 9)}]")
        previous = name
    path.write_text("\n".join(lines) + "\n")
    assert path.stat().st_size < 1500
    return path


def test_yaml_alias_bomb_is_refused_fast_in_one_short_line(tmp_path, capsys):
    path = _bomb(tmp_path / "bomb.yaml")
    start = time.perf_counter()
    with pytest.raises(ValueError, match="aliases") as error:
        load_config(path)
    assert time.perf_counter() - start < 2
    assert str(path) in str(error.value) and len(str(error.value)) < 500
    line = _cli_error(capsys, ["train", "--config", path, "--out", tmp_path / "run"])
    assert str(path) in line and len(line) < 500


@pytest.mark.parametrize("content, needle", [
    (b"\x89PNG\r\n\x1a\n\x00\xff\xfe\x00", "is not text"),
    (b"- data\n- model\n", "must be a mapping of sections"),
    (b"model: [unclosed\n", "is not valid YAML"),
    (b"[" * 20000, "is not valid YAML"),
    (b"# padding\n" * 120_000, "at most 1000000 bytes"),
    (b"model: " + b"x" * 100_000 + b"\n", "must be a mapping of argument names"),
])
def test_config_that_is_not_a_yaml_mapping_names_the_file(tmp_path, content, needle):
    path = tmp_path / "run.yaml"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=re.escape(needle)) as error:
        load_config(path)
    assert str(path) in str(error.value) and len(str(error.value)) < 500


# No unpickling anywhere ----------------------------------------------------------------------


def test_tltf_never_unpickles_nor_evaluates_strings():
    root = Path(tltf.__file__).parent
    banned = re.compile(r"\bpickle\b|allow_pickle=True|\bjoblib\b|\bmarshal\b|\bdill\b"
                        r"|\beval\(|\bexec\(|yaml\.(unsafe_load|full_load|load\()"
                        r"|Loader=yaml\.(Loader|FullLoader|UnsafeLoader)")
    found = [f"{p.name}:{n}: {line.strip()}" for p in sorted(root.rglob("*.py"))
             for n, line in enumerate(p.read_text().splitlines(), 1)
             if banned.search(line) and "_config_loader()" not in line
             and "never unpickle" not in line]
    assert not found, found
    for p in sorted(root.rglob("*.py")):
        for line in p.read_text().splitlines():
            if "np.load(" in line:
                assert "allow_pickle=False" in line, f"{p.name}: {line.strip()}"
