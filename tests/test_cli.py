"""The `tltf` command, run end to end as a user runs it (a subprocess) on a tiny folder."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from tltf.cli import main
from tltf.runs.config import load_config

# A tiny, untrained-weights model keeps every command to seconds of compute.
_TINY = ["--backbone", "mobilenet_v2_035", "--weights", "none", "--image-size", "32"]


def _tltf(*args, cwd=None):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    return subprocess.run([sys.executable, "-m", "tltf.cli", *map(str, args)], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=600)


def _one_line_error(result, *needles):
    assert result.returncode == 1, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("tltf: error:")]
    assert len(errors) == 1, result.stderr[-2000:]
    for needle in needles:
        assert needle in errors[0]
    return errors[0]


def _make_folder(root, n=8):
    rng = np.random.default_rng(0)
    for name, color in (("red", (200, 30, 30)), ("blue", (30, 30, 200))):
        (root / name).mkdir(parents=True)
        for i in range(n):
            pixels = np.clip(np.array(color) + rng.normal(0, 30, (40, 40, 3)), 0, 255)
            Image.fromarray(pixels.astype("uint8")).save(root / name / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return _make_folder(tmp_path_factory.mktemp("cli") / "photos")


@pytest.fixture(scope="module")
def run_dir(photos):
    out = photos.parent / "run"
    result = _tltf("train", "--data", photos, *_TINY, "--head-epochs", "1",
                   "--finetune-epochs", "1", "--batch-size", "4", "--tflite", "--out", out)
    assert result.returncode == 0, result.stderr[-3000:]
    return out


@pytest.mark.slow
def test_train_writes_the_run_folder(run_dir):
    for name in ("model.keras", "model.tflite", "history.json", "config.yaml",
                 "report/report.html", "report/report.json", "report/confusion_matrix.png",
                 "report/training_curves.png"):
        assert (run_dir / name).is_file(), name
    history = json.loads((run_dir / "history.json").read_text())
    assert history["phase"] == [1, 2]
    report = json.loads((run_dir / "report" / "report.json").read_text())
    assert report["class_names"] == ["blue", "red"]


@pytest.mark.slow
def test_train_resume_and_config(run_dir, photos):
    # Resuming a finished run reads its saved config and leaves the run as it is.
    before = (run_dir / "model.keras").read_bytes()
    result = _tltf("train", "--out", run_dir, "--resume")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "is finished; nothing to do" in result.stdout
    assert (run_dir / "model.keras").read_bytes() == before
    config = photos.parent / "run.yaml"
    config.write_text(
        f"data:\n  path: {photos}\n  image_size: 32\n  validation_split: 0.25\n"
        "model:\n  backbone: mobilenet_v2_035\n  weights: null\n  dropout: 0.1\n"
        "train:\n  head_epochs: 1\n  finetune_epochs: 0\n  batch_size: 8\n")
    out = photos.parent / "run-config"
    result = _tltf("train", "--config", config, "--out", out, "--calibrate")
    assert result.returncode == 0, result.stderr[-3000:]
    assert (out / "model.keras").is_file()
    report = json.loads((out / "report" / "report.json").read_text())
    assert report["calibration"]["temperature"] > 0
    assert json.loads((out / "history.json").read_text())["phase"] == [1]


@pytest.mark.slow
def test_evaluate_predict_export(run_dir, photos, tmp_path):
    result = _tltf("evaluate", run_dir / "model.keras", photos, "--out", tmp_path / "rep")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "accuracy" in result.stdout
    assert json.loads((tmp_path / "rep" / "report.json").read_text())["num_samples"] == 16

    result = _tltf("predict", run_dir / "model.keras", photos / "red" / "0.png", photos / "blue",
                   "--top-k", "2", "--json")
    assert result.returncode == 0, result.stderr[-3000:]
    rows = json.loads(result.stdout[result.stdout.index("["):])
    assert len(rows) == 9
    assert all(sorted(r["labels"]) == ["blue", "red"] for r in rows)

    result = _tltf("export", run_dir / "model.keras", tmp_path / "m.tflite",
                   "--quantization", "float16")
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "m.tflite").stat().st_size > 10_000
    before = (tmp_path / "m.tflite").read_bytes()
    result = _tltf("export", run_dir / "model.keras", tmp_path / "m.tflite")
    assert result.returncode == 1 and "already exists" in result.stderr
    assert "--overwrite" in result.stderr and (tmp_path / "m.tflite").read_bytes() == before
    result = _tltf("export", run_dir / "model.keras", tmp_path / "m.tflite", "--overwrite")
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "m.labels.txt").read_text().split() == ["blue", "red"]


@pytest.mark.slow
def test_tune_audit_backbones(photos, tmp_path):
    result = _tltf("tune", "--data", photos, "--out", tmp_path / "search", *_TINY,
                   "--tuner", "random", "--max-trials", "1", "--head-epochs", "1",
                   "--finetune-epochs", "1", "--batch-size", "8")
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "search" / "best_hyperparameters.json").is_file()
    assert len(json.loads((tmp_path / "search" / "trials.json").read_text())) == 1

    result = _tltf("audit", photos, "--json", tmp_path / "audit.json")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "16 images" in result.stdout
    assert (tmp_path / "audit.json").is_file()

    result = _tltf("backbones", "mobilenet_v2*")
    assert result.returncode == 0
    assert "mobilenet_v2_035" in result.stdout and "efficientnet" not in result.stdout


@pytest.mark.slow
def test_user_errors_are_one_line(tmp_path, photos):
    _one_line_error(_tltf("train", "--data", tmp_path / "nowhere", "--out", tmp_path / "r"),
                    "Data folder not found", "nowhere")
    config = tmp_path / "bad.yaml"
    config.write_text("train:\n  head_epoch: 3\n")
    line = _one_line_error(_tltf("train", "--config", config, "--out", tmp_path / "r"),
                           "Unknown key 'head_epoch'", "train")
    assert "head_epochs" in line  # the valid arguments are listed
    _one_line_error(_tltf("train", "--data", photos, "--backbone", "mobilenet_v9",
                          "--out", tmp_path / "r"), "mobilenet_v9")
    verbose = _tltf("train", "--data", tmp_path / "nowhere", "--out", tmp_path / "r", "--verbose")
    assert verbose.returncode == 1 and "Traceback" in verbose.stderr


def test_help_lists_every_command_with_examples(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    for command in ("train", "evaluate", "predict", "export", "tune", "audit", "backbones"):
        assert command in text
    assert "examples:" in text
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "--resume" in capsys.readouterr().out


def test_missing_folder_in_process(tmp_path, capsys):
    assert main(["evaluate", str(tmp_path / "m.keras"), str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Model file not found" in err


def test_load_config_checks_sections_and_keys(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text("data:\n  path: x\n  image_size: 64\nmodel:\n  backbone: mobilenet_v2\n"
                    "train:\n  head_epochs: 2\nexport:\n  quantization: int8\n")
    config = load_config(good)
    assert config["train"] == {"head_epochs": 2}
    assert config["export"] == {"quantization": "int8"}
    tfds = tmp_path / "tfds.yaml"
    tfds.write_text("data:\n  name: tf_flowers\n  split: [train]\n")
    assert load_config(tfds)["data"]["name"] == "tf_flowers"
    cases = {
        "section.yaml": ("training:\n  head_epochs: 2\n", "Unknown config section 'training'"),
        "key.yaml": ("model:\n  backbones: x\n", "Unknown key 'backbones'"),
        "derived.yaml": ("model:\n  num_classes: 3\n", "Unknown key 'num_classes'"),
        "list.yaml": ("- 1\n- 2\n", "must be a mapping"),
        "yaml.yaml": ("model: [\n", "not valid YAML"),
    }
    for name, (text, match) in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(ValueError, match=match):
            load_config(tmp_path / name)
    with pytest.raises(FileNotFoundError, match="Config file not found"):
        load_config(tmp_path / "absent.yaml")


def test_head_fit_and_auto_epochs_reach_the_training_config(tmp_path, photos, monkeypatch):
    import tltf.runs.train

    seen = {}
    monkeypatch.setattr(tltf.runs.train, "train_run",
                        lambda out, config, **kwargs: seen.update(config["train"]))
    assert main(["train", "--data", str(photos), "--out", str(tmp_path / "r"),
                 "--head-fit", "adam", "--finetune-epochs", "auto"]) == 0
    assert seen["head_fit"] == "adam" and seen["finetune_epochs"] == "auto"
    seen.clear()
    assert main(["train", "--data", str(photos), "--out", str(tmp_path / "r"),
                 "--finetune-epochs", "3"]) == 0
    assert seen["finetune_epochs"] == 3 and "head_fit" not in seen
    assert "trunk_cache" not in seen
    for flag, value in (("on", True), ("off", False), ("auto", "auto")):
        seen.clear()
        assert main(["train", "--data", str(photos), "--out", str(tmp_path / "r"),
                     "--trunk-cache", flag]) == 0
        assert seen["trunk_cache"] is value if isinstance(value, bool) else seen["trunk_cache"] == value
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--data", str(photos), "--out", str(tmp_path / "r"),
              "--finetune-epochs", "-1"])
    assert exit_.value.code == 2  # argparse's usage error, naming the argument
