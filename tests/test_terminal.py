"""The terminal: instant help, no TensorFlow chatter, warnings that point at the user's line."""

import inspect
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import tltf
from tltf import _commands, _quiet, cli

ROOT = Path(__file__).resolve().parents[1]
CHATTER = ("I0000", "absl::InitializeLog", "cuInit")

# Runs the CLI as the console script would and reports which heavy modules it imported.
_RUN_CLI = """
import runpy, sys
sys.argv = ["tltf", *sys.argv[1:]]
try:
    runpy.run_module("tltf.cli", run_name="__main__")
except SystemExit as exit:
    code = exit.code
heavy = [m for m in ("tensorflow", "keras", "keras_tuner") if m in sys.modules]
print("RESULT", code, heavy, file=sys.stderr)
"""


def _env(**changes):
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env.update(changes)
    return env


@pytest.mark.parametrize("args", [["--help"], ["--version"], ["train", "--help"],
                                  ["tune", "--help"], ["export", "--help"]])
def test_help_and_version_import_no_tensorflow(args):
    done = subprocess.run([sys.executable, "-c", _RUN_CLI, *args], capture_output=True,
                          text=True, cwd=ROOT, env=_env(), timeout=60)
    assert "RESULT 0 []" in done.stderr, done.stderr
    assert "tltf" in done.stdout


def test_import_tltf_is_lazy_but_keeps_the_public_names():
    code = ("import sys, tltf; assert 'tensorflow' not in sys.modules; "
            "assert set(tltf.__all__) <= set(dir(tltf)); print(tltf.__version__)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, env=_env(), timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == tltf.__version__
    # Importing the submodule of the same name does not replace the public function.
    import importlib

    importlib.import_module("tltf.evaluation.metrics")
    importlib.import_module("tltf.data.auditing")
    assert inspect.isfunction(tltf.evaluate) and inspect.isfunction(tltf.audit)
    from tltf import build_classifier

    assert build_classifier is tltf.models.classifier.build_classifier


def test_wrong_keras_backend_still_fails_at_import():
    done = subprocess.run([sys.executable, "-c", "import tltf"], capture_output=True,
                          text=True, cwd=ROOT, env=_env(KERAS_BACKEND="jax"), timeout=60)
    assert done.returncode != 0
    assert "KERAS_BACKEND" in done.stderr


@pytest.mark.slow
def test_cli_hides_tensorflow_startup_lines_unless_verbose():
    command = [sys.executable, "-m", "tltf.cli", "backbones", "mobilenet_v2"]
    quiet = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=_env(),
                           timeout=120)
    assert quiet.returncode == 0, quiet.stderr
    assert "mobilenet_v2" in quiet.stdout
    assert not [line for line in quiet.stderr.splitlines() if any(c in line for c in CHATTER)], \
        quiet.stderr
    # The counter-test: the same command with --verbose shows what was hidden.
    loud = subprocess.run([*command, "--verbose"], capture_output=True, text=True, cwd=ROOT,
                          env=_env(), timeout=120)
    assert loud.returncode == 0, loud.stderr
    assert any(c in loud.stderr for c in CHATTER), loud.stderr


def test_quiet_drops_native_output_on_success_and_replays_it_on_error(capfd):
    with _quiet.quiet(verbose=False):
        os.write(2, b"native chatter\n")
        print("python warning line", file=sys.stderr)
    assert capfd.readouterr().err == "python warning line\n"
    with pytest.raises(RuntimeError, match="boom"), _quiet.quiet(verbose=False):
        os.write(2, b"native detail of the failure\n")
        raise RuntimeError("boom")
    assert "native detail of the failure" in capfd.readouterr().err
    with _quiet.quiet(verbose=True):
        os.write(2, b"shown when verbose\n")
    assert "shown when verbose" in capfd.readouterr().err


def _folder_with_a_broken_file(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for name in ("cat", "dog"):
        (root / name).mkdir(parents=True)
        for i in range(2):
            pixels = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    (root / "dog" / "broken.jpg").write_bytes(b"not an image")
    return root


def test_warning_points_at_the_callers_line(tmp_path):
    folder = _folder_with_a_broken_file(tmp_path / "photos")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        line = inspect.currentframe().f_lineno + 1
        tltf.load_image_folder(folder, image_size=32, cache_dir=tmp_path / "cache")
    ours = [w for w in caught if "broken.jpg" in str(w.message)]
    assert ours, [str(w.message) for w in caught]
    assert (ours[0].filename, ours[0].lineno) == (__file__, line)


def test_warn_skips_every_tltf_frame_whatever_the_depth():
    # Two nested functions compiled as if they lived in the tltf package: a fixed
    # stacklevel would name one of them; `warn` names this test's line.
    source = "from tltf._warn import warn\ndef inner():\n    warn('deep')\ndef outer():\n    inner()\n"
    namespace = {}
    exec(compile(source, str(Path(tltf.__file__).parent / "_nested.py"), "exec"), namespace)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        line = inspect.currentframe().f_lineno + 1
        namespace["outer"]()
    assert [(w.filename, w.lineno, str(w.message)) for w in caught] == [(__file__, line, "deep")]


def test_cli_prints_warnings_as_one_line(monkeypatch, capsys):
    def command(args):
        warnings.warn("the data is small\n  and this is its second line", UserWarning,
                      stacklevel=1)
        return 0

    monkeypatch.setattr(_commands, "backbones", command)
    before = warnings.showwarning
    assert cli.main(["backbones"]) == 0
    err = capsys.readouterr().err
    assert err == "tltf: warning: the data is small and this is its second line\n"
    assert warnings.showwarning is before


def test_building_a_model_loads_the_hub_source_in_a_fresh_process():
    # The registry knows no source; tltf.models.classifier loads the hub: source, so build_classifier,
    # search and `tltf train --backbone hub:...` find it without importing tltf.backbones.hub first.
    code = ("import tltf; tltf.build_classifier; from tltf.backbones.registry import get_backbone, "
            "list_backbones; print(len(list_backbones('hub:*')), "
            "get_backbone('hub:mobilenet_v2_100_224').feature_dim)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, env=_env(), timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    count, dim = done.stdout.split()
    assert int(count) >= 10 and dim == "1280"
