"""tf.distribute: MirroredStrategy over two logical CPUs, and a multi-worker run that survives
a worker killed with SIGKILL (resumed by `keras.callbacks.BackupAndRestore`).

Both run in subprocesses (tests/_worker.py): logical devices and TF_CONFIG must be set before
TensorFlow initialises, and the pytest process has already initialised it.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

WORKER = Path(__file__).with_name("_worker.py")
REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _env(**extra) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    env.update(extra)
    return env


def _records(text: str) -> list[dict]:
    records = []
    for line in text.splitlines():
        if line.startswith("{"):
            records.append(json.loads(line))
    return records


def _run(*args, timeout: float, **env) -> dict:
    proc = subprocess.run(
        [sys.executable, str(WORKER), *args],
        env=_env(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return _records(proc.stdout)[-1]


@pytest.mark.parametrize(
    "cache_features",
    ["0", "1"],
)
def test_fine_tune_under_mirrored_strategy_over_two_logical_cpus(cache_features):
    result = _run("mirrored", timeout=300, TLTF_TEST_CACHE_FEATURES=cache_features)
    assert result["replicas"] == 2
    assert result["global_batch"] == 16  # 8 per replica x 2 replicas
    # The model was built outside the scope; it is rebuilt with mirrored variables.
    assert result["rebuilt"] is True
    assert result["mirrored_type"] == "MirroredVariable"
    assert len(result["devices"]) == 2
    # Cached features: phase 1 is one logistic-regression fit of the head, one row.
    assert result["head_fit"] == ("convex" if cache_features == "1" else "adam")
    assert result["phases"] == ([1, 2, 2] if cache_features == "1" else [1, 1, 2, 2])
    assert result["replicas_equal"] is True
    if cache_features == "1":  # the fitted head beats chance (log 2 for 2 classes)
        assert result["loss"][0] < 0.69
    else:
        assert result["loss"][-1] < result["loss"][0]
    assert result["weights_changed"] is True  # trained weights came back to the user's model


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


class _Cluster:
    """Two local worker processes of tests/_worker.py, output captured in files."""

    def __init__(self, tmp: Path, args: list[str]):
        self.tmp, self.args = tmp, args
        self.procs: dict[int, subprocess.Popen] = {}
        self.logs: dict[int, Path] = {}
        self.starts = {0: 0, 1: 0}
        self.workers: list[str] = []

    def start(self) -> None:
        # Fresh ports for every (re)start: the old ones may still be held by the dead process.
        self.workers = [f"127.0.0.1:{port}" for port in _free_ports(2)]
        for index in (0, 1):
            self.starts[index] += 1
            task = {"type": "worker", "index": index}
            config = {"cluster": {"worker": self.workers}, "task": task}
            log = self.tmp / f"worker{index}-run{self.starts[index]}.log"
            with open(log, "w") as out:
                self.procs[index] = subprocess.Popen(
                    [sys.executable, str(WORKER), *self.args],
                    env=_env(TF_CONFIG=json.dumps(config)),
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    text=True,
                )
            self.logs[index] = log

    def records(self, index: int, event: str | None = None) -> list[dict]:
        records = _records(self.logs[index].read_text())
        return [r for r in records if event is None or r.get("event") == event]

    def wait_for(self, predicate, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            if any(p.poll() is not None for p in self.procs.values()):
                break
            time.sleep(0.2)
        raise AssertionError(f"timed out or exited while waiting for {what}:\n{self.dump()}")

    def wait_all(self, timeout: float) -> None:
        for proc in self.procs.values():
            proc.wait(timeout=timeout)
        assert all(p.returncode == 0 for p in self.procs.values()), self.dump()

    def dump(self) -> str:
        return "\n".join(
            f"--- worker {i} ---\n{log.read_text()[-3000:]}" for i, log in self.logs.items()
        )

    def kill_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)


def _kill_one_worker_and_restart(tmp_path: Path, args: list[str], kill_after: int) -> tuple:
    """Runs two workers, SIGKILLs worker 1 once the chief has finished `kill_after` epochs
    (so a checkpoint exists), then restarts the cluster, as a cluster manager would.

    Returns the chief's completed epochs before the kill and the records of both workers in
    the second run.
    """
    cluster = _Cluster(tmp_path, args)
    try:
        cluster.start()
        cluster.wait_for(
            lambda: len(cluster.records(0, "epoch_end")) >= kill_after, 240, "epochs on the chief"
        )
        first = cluster.records(0, "start")[0]
        assert first["replicas"] == 2 and first["chief"] is True
        assert cluster.records(1, "start")[0]["chief"] is False
        cluster.procs[1].send_signal(signal.SIGKILL)
        cluster.procs[1].wait(timeout=30)
        assert cluster.procs[1].returncode == -signal.SIGKILL
        # The survivor cannot finish its collectives without its peer: it fails after the
        # communication timeout (or we stop it); then the whole cluster restarts.
        try:
            cluster.procs[0].wait(timeout=30)
        except subprocess.TimeoutExpired:
            cluster.procs[0].kill()
            cluster.procs[0].wait(timeout=30)
        assert not cluster.records(0, "done"), "the chief finished without its peer"
        completed = len(cluster.records(0, "epoch_end"))

        cluster.start()
        cluster.wait_all(timeout=300)
        return completed, [cluster.records(0), cluster.records(1)]
    finally:
        cluster.kill_all()


def test_multi_worker_fit_survives_sigkill_of_one_worker(tmp_path):
    """Building blocks: `fit` + `distribute.backup_and_restore` under MultiWorkerMirroredStrategy."""
    epochs = 6
    args = ["multiworker", str(tmp_path / "backup"), str(epochs)]
    completed, runs = _kill_one_worker_and_restart(tmp_path, args, kill_after=2)
    for records in runs:
        begins = [r["epoch"] for r in records if r.get("event") == "epoch_begin"]
        # Resumed after the last backed-up epoch, not from scratch, and ran to the end.
        assert 2 <= begins[0] <= completed
        assert begins == list(range(begins[0], epochs))
        assert records[-1]["event"] == "done"
    assert not (tmp_path / "backup").exists()  # the chief removes the backup at the end


def test_multi_worker_fine_tune_resumes_after_sigkill_in_phase_2(tmp_path):
    """`fine_tune(strategy=..., directory=..., resume=True)` across two worker processes."""
    head, finetune = 2, 4
    args = ["multiworker_fine_tune", str(tmp_path / "run"), str(head), str(finetune)]
    completed, runs = _kill_one_worker_and_restart(tmp_path, args, kill_after=head + 2)
    for records in runs:
        begins = [r["epoch"] for r in records if r.get("event") == "epoch_begin"]
        # Phase 2 continues at its epoch 2 or later (fit's epochs count within the phase).
        assert 2 <= begins[0] <= completed - head
        assert begins == list(range(begins[0], finetune))
        done = records[-1]
        assert done["event"] == "done" and done["resumed"] is True
        assert done["phase"] == [1] * head + [2] * finetune
