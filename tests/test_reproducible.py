"""The same seed gives the same run: two fresh processes, identical histories and weights."""

import json
import subprocess
import sys
import textwrap

import pytest

_RUN = textwrap.dedent("""
    import hashlib, json
    import numpy as np
    import tltf

    rng = np.random.default_rng(7)  # the data are fixed; only the seeds below vary
    x = rng.integers(0, 256, (48, 40, 40, 3), dtype=np.uint8)
    y = np.arange(48) % 3
    x[y == 1, :, :, 0] = 255  # learnable: class 1 is red, class 2 is dark
    x[y == 2] //= 4
    train, val = tltf.load_arrays(x, y, validation_split=0.25, seed=0, image_size=32)
    seed = int(__import__("sys").argv[1])
    model = tltf.build_classifier("mobilenet_v2", 3, image_size=32, weights=None, seed=seed)
    result = tltf.fine_tune(model, train, val, head_epochs=2, finetune_epochs=2, batch_size=8,
                            seed=seed, verbose=0)
    history = {k: v for k, v in result.history.items() if k != "time"}
    digest = hashlib.sha256(b"".join(w.tobytes() for w in model.get_weights())).hexdigest()
    print(json.dumps({"history": history, "weights": digest}))
""")


def _run(seed: int) -> dict:
    out = subprocess.run([sys.executable, "-c", _RUN, str(seed)], capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_two_seeded_runs_in_fresh_processes_are_identical():
    first, second, other = _run(0), _run(0), _run(1)
    assert first["history"] == second["history"]
    assert first["weights"] == second["weights"]
    # The check can fail: another seed gives another run.
    assert other["weights"] != first["weights"]
    assert other["history"]["loss"] != first["history"]["loss"]
