"""A terminal people enjoy: output that fits where it is shown, quiet logs, TensorBoard.

The progress helper is tested on fake streams (a terminal and a file); `tltf train` runs in
a subprocess with stdout going to a file, as in CI.
"""

import io
import logging
import os
import re
import subprocess
import sys
import warnings

import numpy as np
import pytest
import tensorflow as tf
from image_cases import photo_folder
from PIL import Image

import tltf
from tltf import _progress
from tltf._progress import progress, resolve_verbose
from tltf.data.checks import check_files
from tltf.training.recipe import fine_tune

_EPOCH_LINE = re.compile(r"^phase (?:[12] epoch \d+/\d+ - .*loss [\d.]+.* - lr \S+"
                         r"|1 logistic regression, C \S+ - .*loss [\d.]+.*) - [\d.]+s$")


class _Stream(io.StringIO):
    def __init__(self, tty: bool):
        super().__init__()
        self.tty = tty

    def isatty(self):
        return self.tty


# ------------------------------------------------------------------------- the helper


def test_resolve_verbose_follows_the_stream():
    assert resolve_verbose("auto", _Stream(tty=True)) == 1
    assert resolve_verbose("auto", _Stream(tty=False)) == 2
    assert resolve_verbose(0) == 0 and resolve_verbose(2, _Stream(tty=True)) == 2
    for bad in (3, "yes", True, None):
        with pytest.raises(ValueError, match="`verbose` must be 'auto'"):
            resolve_verbose(bad)


def test_progress_on_a_terminal_is_one_line_redrawn():
    stream = _Stream(tty=True)
    assert list(progress(range(500), "checking files", "auto", stream=stream,
                         unit="files")) == list(range(500))
    out = stream.getvalue()
    assert out.startswith("\rchecking files [") and out.endswith("\n")
    assert out.count("\n") == 1
    assert out.rsplit("\r", 1)[-1].startswith("checking files [" + "=" * 30 + "] 500/500 files")


def test_progress_in_a_file_is_a_few_plain_lines(monkeypatch):
    monkeypatch.setattr(_progress, "_LINES_GAP", 0.0)  # every 10%, however fast the step
    stream = _Stream(tty=False)
    assert sum(progress(range(1000), "evaluating", "auto", stream=stream)) == sum(range(1000))
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue() and "\x1b[" not in stream.getvalue()
    assert lines[0] == "evaluating: 0/1000 items"
    assert [line.split()[1] for line in lines[1:-1]] == [f"{k}00/1000" for k in range(1, 10)]
    assert re.fullmatch(r"evaluating: done, 1000 items in [\d.]+s", lines[-1])


def test_a_quick_step_in_a_file_prints_start_and_done_only():
    stream = _Stream(tty=False)
    with progress(40, "verifying m.tflite", 2, stream=stream, unit="images") as bar:
        for _ in range(4):
            bar.update(10)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2 and lines[0] == "verifying m.tflite: 0/40 images"
    assert lines[1].startswith("verifying m.tflite: done, 40 images")


def test_progress_with_unknown_total_and_silent_mode():
    stream = _Stream(tty=False)
    list(progress(iter(range(300)), "predicting", 2, stream=stream))
    assert stream.getvalue().splitlines()[0] == "predicting: started"
    assert "done, 300 items" in stream.getvalue()
    silent = _Stream(tty=True)
    items = [1, 2, 3]
    assert list(progress(items, "x", 0, stream=silent)) == items
    with progress(10, "x", 0, stream=silent) as bar:
        bar.update(10)
    assert silent.getvalue() == ""


def test_check_files_shows_the_check_pass(tmp_path, capsys):
    for i in range(5):
        Image.fromarray(np.zeros((8, 8, 3), "uint8")).save(tmp_path / f"{i}.png")
    files = sorted(tmp_path.glob("*.png"))
    check_files(files, cache_dir=tmp_path / "cache", verbose=2)
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "checking files: 0/5 files"
    assert "checking files: done, 5 files" in out
    check_files(files, cache_dir=tmp_path / "cache", verbose=2)  # all cached: nothing to show
    assert capsys.readouterr().out == ""
    with pytest.raises(ValueError, match="`verbose` must be"):
        check_files(files, cache_dir=tmp_path / "cache", verbose="loud")


# ------------------------------------------------------------------------- training


def _tiny_data(n=10, size=32):
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (n, size, size, 3)).astype("float32")
    y = np.arange(n) % 2
    return x, tf.data.Dataset.from_tensor_slices((x, y)).batch(4)  # batches of 4, 4 and 2


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def _retracing(messages):
    return [m for m in messages if "retracing" in m]


@pytest.mark.slow
def test_training_several_models_in_one_process_logs_no_retracing():
    # TensorFlow's detector (polymorphic_function._FrequentTracingDetector) warns through
    # the "tensorflow" logger, keyed by the Python code of the traced function.
    logger = logging.getLogger("tensorflow")
    records = _Records()
    logger.addHandler(records)
    try:
        # The capture sees the real warning: a tf.function made anew for every shape.
        for n in range(1, 8):
            tf.function(lambda v: v + 1)(tf.zeros([n]))
        assert _retracing(records.messages), "the retracing warning was not captured"
        records.messages.clear()

        x, ds = _tiny_data()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for seed in range(3):
                model = tltf.build_classifier("mobilenet_v2", 2, image_size=32, weights=None)
                result = fine_tune(model, ds, ds, head_epochs=1, finetune_epochs=1, seed=seed,
                                   verbose=0)
                assert result.cached_features and result.history["phase"] == [1, 2]
                assert len(tltf.predict(model, x[:5])) == 5
                tltf.evaluate(model, ds)
    finally:
        logger.removeHandler(records)
    assert not _retracing(records.messages), _retracing(records.messages)
    assert not [w for w in caught if "retracing" in str(w.message)]
    # Only Keras' trainer functions are exempt: any other retracing still warns.
    assert not [f for f in logger.filters if isinstance(f, _progress._KerasStepRetracing)]


def test_tensorboard_needs_a_directory_and_the_package(monkeypatch):
    _, ds = _tiny_data()
    model = tltf.build_classifier("mobilenet_v2", 2, image_size=32, weights=None)
    with pytest.raises(ValueError, match="`tensorboard=True` writes event files"):
        fine_tune(model, ds, head_epochs=1, finetune_epochs=0, tensorboard=True, verbose=0)
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # as if not installed
    with pytest.raises(ImportError, match=r'pip install "tltf\[tensorboard\]"'):
        fine_tune(model, ds, head_epochs=1, finetune_epochs=0, tensorboard=True,
                  directory="unused", verbose=0)


# ------------------------------------------------------------------------- tltf train


def _scalar_tags(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags = set()
    for events in folder.rglob("events.out.tfevents.*"):
        accumulator = EventAccumulator(str(events.parent))
        accumulator.Reload()
        tags |= set(accumulator.Tags()["scalars"]) | set(accumulator.Tags()["tensors"])
    return tags


@pytest.mark.slow
def test_tltf_train_into_a_file_writes_plain_lines_a_train_log_and_tensorboard(tmp_path):
    pytest.importorskip("tensorboard")
    photos = photo_folder(tmp_path / "photos")
    run = tmp_path / "run"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    with open(tmp_path / "stdout.txt", "w") as stdout:
        result = subprocess.run(
            [sys.executable, "-m", "tltf.cli", "train", "--data", str(photos),
             "--backbone", "mobilenet_v2_035", "--weights", "none", "--image-size", "32",
             "--head-epochs", "2", "--finetune-epochs", "1", "--batch-size", "4",
             "--tensorboard", "--out", str(run)],
            env=env, stdout=stdout, stderr=subprocess.PIPE, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    out = (tmp_path / "stdout.txt").read_text()
    assert "\x1b[" not in out and "\r" not in out, out[:2000]
    epochs = [line for line in out.splitlines() if _EPOCH_LINE.match(line)]
    # Phase 1 is one convex fit of the head (head_fit="auto"), then one Adam epoch.
    assert [line.split(" - ")[0].split(", C ")[0] for line in epochs] == [
        "phase 1 logistic regression", "phase 2 epoch 1/1"], out
    assert not re.search(r"^Epoch \d+/\d+$|/step", out, re.MULTILINE), out  # no Keras lines
    assert f"TensorBoard: tensorboard --logdir {run / 'tensorboard'}" in out

    log = (run / "logs" / "train.log").read_text().splitlines()
    # Every epoch line (date, time, the same line), and the line that says phase 2 trained
    # on the cached trunk.
    notes = [line for line in log if "caching the frozen trunk's output" in line]
    assert len(log) == 3 and len(notes) == 1, log
    assert [line.split(" ", 2)[2] for line in log if line not in notes] == epochs

    for phase in ("phase1", "phase2"):
        tags = _scalar_tags(run / "tensorboard" / phase)
        assert "epoch_loss" in tags and "epoch_accuracy" in tags, (phase, tags)
