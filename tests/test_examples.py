"""Every example runs as written (`python examples/<name>.py --quick ...`) and writes its files."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory) -> Path:
    """A tiny cats/dogs folder with train/ and validation/ splits of real JPEG files."""
    from PIL import Image

    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    for split, count in (("train", 6), ("validation", 3)):
        for label, name in enumerate(("cats", "dogs")):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 120, (40, 56, 3), dtype=np.uint8)
                pixels[..., 2 * label] += 120  # cats reddish, dogs bluish
                Image.fromarray(pixels).save(folder / f"{name}_{i}.jpg")
    return root


@pytest.fixture(scope="module")
def tf2_savedmodel(tmp_path_factory) -> str:
    """A small fine-tunable TF2 SavedModel in the TF Hub convention (with `training`)."""
    import tensorflow as tf

    class Net(tf.Module):
        def __init__(self):
            self.kernel = tf.Variable(tf.random.stateless_normal([3, 3, 3, 16], (0, 1)) * 0.2)

        @tf.function
        def __call__(self, images, training=False):
            return tf.nn.relu(tf.nn.conv2d(images, self.kernel, 2, "SAME"))

    net = Net()
    spec = tf.TensorSpec([None, None, None, 3], tf.float32)
    for training in (True, False):
        net.__call__.get_concrete_function(spec, training)
    path = tmp_path_factory.mktemp("hub") / "tiny_net"
    tf.saved_model.save(net, str(path))
    return str(path)


def _run(script: str, *args, timeout: int = 900) -> str:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")  # KERAS_HOME comes from conftest
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / script), *map(str, args)],
        capture_output=True, text=True, timeout=timeout, env=env,
    )
    assert proc.returncode == 0, f"{script} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc.stdout


def test_cats_vs_dogs(photo_dir, tmp_path, imagenet_weights):
    out = tmp_path / "run"
    stdout = _run("cats_vs_dogs.py", "--quick", "--data-dir", photo_dir, "--out", out)
    for name in ("model.keras", "cats_vs_dogs.tflite", "cats_vs_dogs.labels.txt",
                 "report/report.html"):
        assert (out / name).is_file(), name
    assert (out / "cats_vs_dogs.labels.txt").read_text().split() == ["cats", "dogs"]
    assert "Validation accuracy" in stdout and str(out / "cats_vs_dogs.tflite") in stdout


def test_hub_backbone_fine_tunes_a_tf2_savedmodel(photo_dir, tf2_savedmodel, tmp_path):
    out = tmp_path / "run"
    _run("hub_backbone.py", "--quick", "--data-dir", photo_dir, "--out", out,
         "--backbone", f"hub:{tf2_savedmodel}", "--image-size", 64)
    for name in ("model.keras", "hub_model.tflite", "report/report.html"):
        assert (out / name).is_file(), name


@pytest.mark.shared
def test_hub_backbone_with_the_tf1_module(photo_dir, hub_module_dir, tmp_path):
    out = tmp_path / "run"
    _run("hub_backbone.py", "--quick", "--data-dir", photo_dir, "--out", out,
         "--backbone", f"hub:{hub_module_dir}", "--finetune-epochs", 0)
    assert (out / "hub_model.tflite").is_file()


def test_tune_unfreeze_depth(photo_dir, tmp_path, imagenet_weights):
    out = tmp_path / "run"
    stdout = _run("tune_unfreeze_depth.py", "--quick", "--data-dir", photo_dir, "--out", out)
    assert (out / "best_model.keras").is_file() and (out / "search.png").is_file()
    assert "unfreeze_blocks" in stdout


def test_export_for_mobile(photo_dir, tmp_path, imagenet_weights):
    out = tmp_path / "run"
    stdout = _run("export_for_mobile.py", "--quick", "--data-dir", photo_dir, "--out", out)
    for name in ("model_int8.tflite", "model_float32.tflite", "model_int8.labels.txt"):
        assert (out / name).is_file(), name
    assert (out / "model_int8.tflite").stat().st_size < (out / "model_float32.tflite").stat().st_size
    assert "int8" in stdout and "validation images" in stdout


def test_every_example_is_tested_and_takes_quick_and_data_dir():
    tested = {"cats_vs_dogs.py", "hub_backbone.py", "tune_unfreeze_depth.py",
              "export_for_mobile.py"}
    assert {p.name for p in EXAMPLES.glob("*.py")} == tested
    for script in tested:
        text = (EXAMPLES / script).read_text()
        assert '"--quick"' in text and '"--data-dir"' in text, script
        imports = [line for line in text.splitlines() if "import" in line and "tltf" in line]
        assert all(line.startswith("from tltf import") for line in imports), script
