"""A run killed with SIGKILL in the middle of phase 2 resumes to the same end as an unbroken run."""

import json
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

WORKER = Path(__file__).with_name("_train_worker.py")


def _run(directory, mode, head_fit):
    proc = subprocess.run([sys.executable, str(WORKER), str(directory), mode, head_fit],
                          capture_output=True, text=True, timeout=600)
    return proc


@pytest.mark.slow
@pytest.mark.parametrize("head_fit, head_rows", [("adam", 2), ("convex", 1)])
def test_resume_after_sigkill_in_phase_2_matches_an_unbroken_run(tmp_path, head_fit, head_rows):
    full = _run(tmp_path / "full", "full", head_fit)
    assert full.returncode == 0, full.stderr[-3000:]
    expected = json.loads(full.stdout.strip().splitlines()[-1])

    killed = _run(tmp_path / "run", "kill", head_fit)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    state = json.loads((tmp_path / "run" / "checkpoints" / "state.json").read_text())
    assert state["phase"] == 2 and state["epochs_done"] == {"1": head_rows, "2": 2}
    assert not list((tmp_path / "run" / "checkpoints").glob(".tmp-*"))

    resumed = _run(tmp_path / "run", "resume", head_fit)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    got = json.loads(resumed.stdout.strip().splitlines()[-1])

    # Same total number of epochs, same phases, and the same numbers: the optimizer's moments
    # and step count (hence the learning-rate schedule) came back with the weights.
    assert got["history"]["phase"] == [1] * head_rows + [2, 2, 2, 2]
    assert got["iterations"] == expected["iterations"] == 4 * 4
    for key in ("loss", "val_loss", "learning_rate"):
        np.testing.assert_allclose(got["history"][key], expected["history"][key], rtol=1e-4)
    np.testing.assert_allclose(got["weights"], expected["weights"], rtol=1e-4, atol=1e-5)
