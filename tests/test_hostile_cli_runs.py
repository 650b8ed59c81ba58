"""Nothing lost: `tltf train --out RUN` creates a run once, locks it, resumes only what matches.

Refusals run in process (`tltf.cli.main`), since they must happen before any data is read;
the runs that train go through a subprocess, as a user runs them.
"""

import json
import os
import subprocess
import sys
import time

import pytest
from image_cases import photo_folder

from tltf.cli import main
from tltf.runs.folder import RunFolder

_TINY = ["--backbone", "mobilenet_v2_035", "--weights", "none", "--image-size", "32",
         "--head-epochs", "1", "--finetune-epochs", "0", "--batch-size", "4"]


def _tltf(*args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    return subprocess.run([sys.executable, "-m", "tltf.cli", *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=600)


def _snapshot(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != ".tltf.lock"}


def _refused(capsys, argv, *needles):
    started = time.perf_counter()
    status = main(argv)
    err = capsys.readouterr().err
    assert status == 1, err
    lines = [line for line in err.splitlines() if line.startswith("tltf: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert time.perf_counter() - started < 30
    return lines[0]


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return photo_folder(tmp_path_factory.mktemp("runs") / "photos")


@pytest.fixture(scope="module")
def finished_run(photos):
    out = photos.parent / "run"
    result = _tltf("train", "--data", photos, *_TINY, "--tflite", "--out", out)
    assert result.returncode == 0, result.stderr[-3000:]
    return out


@pytest.mark.slow
def test_finished_run_records_its_steps_and_resume_is_a_no_op(finished_run):
    record = json.loads((finished_run / "run.json").read_text())
    assert record["state"] == "finished"
    assert record["steps"] == {"trained": True, "evaluated": True, "exported": True}
    assert record["identity"]["class_names"] == ["blue", "red"]
    assert (finished_run / "model.labels.txt").read_text().split() == ["blue", "red"]
    before = _snapshot(finished_run)
    result = _tltf("train", "--out", finished_run, "--resume")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "is finished; nothing to do" in result.stdout
    assert _snapshot(finished_run) == before  # model.keras bit-identical, nothing rewritten


@pytest.mark.slow
def test_existing_run_is_refused_and_failed_commands_leave_it_untouched(
        finished_run, photos, tmp_path, capsys):
    before = _snapshot(finished_run)
    _refused(capsys, ["train", "--data", str(photos), *_TINY, "--out", str(finished_run)],
             "already holds a run (state: finished)", "--resume", "--overwrite")
    # A typo in --data, with --overwrite: the run is not touched, config.yaml included.
    _refused(capsys, ["train", "--data", str(photos) + "-typo", *_TINY, "--overwrite",
                      "--out", str(finished_run)], "Data folder not found")
    # A model that cannot be built (a missing weights file) is refused before the old run goes.
    result = _tltf("train", "--data", photos, *_TINY, "--weights", "/nowhere/w.h5",
                   "--overwrite", "--out", finished_run)
    assert result.returncode == 1 and "/nowhere/w.h5" in result.stderr
    assert "Traceback" not in result.stderr
    # A bad quantization or image size is refused before any data is read.
    _refused(capsys, ["train", "--data", str(photos), *_TINY, "--tflite", "int9", "--overwrite",
                      "--out", str(finished_run)], "quantization", "int9")
    _refused(capsys, ["train", "--data", str(photos), *_TINY[:4], "--image-size", "100000",
                      "--out", str(tmp_path / "new")], "image_size=100000")
    assert not (tmp_path / "new").exists()  # a failed new run leaves no folder behind
    # Resuming with another backbone names both.
    _refused(capsys, ["train", "--out", str(finished_run), "--resume", "--backbone",
                      "mobilenet_v2"], "backbone='mobilenet_v2_035'", "backbone='mobilenet_v2'")
    assert _snapshot(finished_run) == before


def test_out_that_is_a_file_or_a_foreign_folder_is_refused(photos, tmp_path, capsys):
    file = tmp_path / "notes.txt"
    file.write_text("mine")
    _refused(capsys, ["train", "--data", str(photos), *_TINY, "--out", str(file)],
             "is a file, not a folder")
    foreign = tmp_path / "thesis"
    foreign.mkdir()
    (foreign / "chapter1.tex").write_text("mine")
    _refused(capsys, ["train", "--data", str(photos), *_TINY, "--out", str(foreign)],
             "is not empty (chapter1.tex) and holds no tltf run")
    _refused(capsys, ["train", "--data", str(photos), *_TINY, "--overwrite", "--out",
                      str(foreign)], "is not empty (chapter1.tex) and holds no tltf run")
    _refused(capsys, ["train", "--out", str(tmp_path / "nothing"), "--resume"], "Cannot resume")
    assert file.read_text() == "mine" and os.listdir(foreign) == ["chapter1.tex"]


def test_a_second_writer_fails_fast_naming_the_holder(photos, tmp_path, capsys):
    out = tmp_path / "busy"
    with RunFolder.open(out):
        line = _refused(capsys, ["train", "--data", str(photos), *_TINY, "--out", str(out)],
                        "is being written by pid", "choose another --out")
        assert str(os.getpid()) in line
    assert not any(p.name != ".tltf.lock" for p in out.iterdir())


@pytest.mark.slow
def test_overwrite_leaves_nothing_stale_and_resume_finishes_missing_steps(photos, tmp_path):
    out = tmp_path / "run"
    assert _tltf("train", "--data", photos, *_TINY, "--tflite", "--out", out).returncode == 0
    assert (out / "model.tflite").is_file()
    other = photo_folder(tmp_path / "other", classes=("cat", "dog", "fox"))
    result = _tltf("train", "--data", other, *_TINY, "--overwrite", "--out", out)
    assert result.returncode == 0, result.stderr[-3000:]
    assert not (out / "model.tflite").exists() and not (out / "model.labels.txt").exists()
    assert json.loads((out / "run.json").read_text())["identity"]["class_names"] == [
        "cat", "dog", "fox"]

    # Interrupted in the report step: resume does the report, not the training.
    record = json.loads((out / "run.json").read_text())
    record["state"], record["steps"]["evaluated"] = "trained", False
    (out / "run.json").write_text(json.dumps(record))
    model = (out / "model.keras").read_bytes()
    history = (out / "history.json").read_bytes()
    for f in (out / "report").iterdir():
        f.unlink()
    result = _tltf("train", "--out", out, "--resume")
    assert result.returncode == 0, result.stderr[-3000:]
    assert (out / "report" / "report.html").is_file()
    assert (out / "model.keras").read_bytes() == model
    assert (out / "history.json").read_bytes() == history
    assert json.loads((out / "run.json").read_text())["state"] == "finished"


@pytest.mark.slow
def test_resume_with_the_class_order_changed_is_refused(photos, tmp_path):
    out = tmp_path / "run"
    config = tmp_path / "swapped.yaml"
    config.write_text(f"data:\n  path: {photos}\n  class_names: [red, blue]\n")
    result = _tltf("train", "--data", photos, *_TINY, "--out", out)
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads((out / "run.json").read_text())
    record["state"], record["steps"]["trained"] = "training", False  # as if interrupted
    (out / "run.json").write_text(json.dumps(record))
    before = _snapshot(out)
    result = _tltf("train", "--config", config, *_TINY, "--out", out, "--resume")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "class_names=['blue', 'red']" in result.stderr
    assert "class_names=['red', 'blue']" in result.stderr
    assert _snapshot(out) == before


def test_a_class_named_like_a_split_keeps_the_validation_split(tmp_path):
    from tltf.runs.config import is_split_folder

    plain = photo_folder(tmp_path / "plain", classes=("test", "train"))
    assert not is_split_folder(plain)  # classes called test and train: no split folders
    from tltf import load_image_folder

    train, val = load_image_folder(plain, image_size=8, validation_split=0.5, seed=0,
                                   cache_dir=tmp_path / ".cache")
    assert train.class_names == ["test", "train"] and len(val) == 6
    split = tmp_path / "split"
    photo_folder(split / "train")
    photo_folder(split / "validation")
    assert is_split_folder(split)
