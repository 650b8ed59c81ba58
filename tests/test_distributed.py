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


def _run(*args, timeout: float) -> dict:
    proc = subprocess.run(
        [sys.executable, str(WORKER), *args],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return _records(proc.stdout)[-1]


def test_mirrored_strategy_over_two_logical_cpus():
    result = _run("mirrored", timeout=240)
    assert result["replicas"] == 2
    assert result["global_batch"] == 16  # 8 per replica x 2 replicas
    # The model was built outside the scope; match_runtime rebuilt it with mirrored variables.
    assert result["rebuilt"] is True
    assert result["mirrored_type"] == "MirroredVariable"
    assert len(result["devices"]) == 2
    assert result["loss"][-1] < result["loss"][0]


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

    def __init__(self, tmp: Path, backup_dir: Path, epochs: int):
        self.tmp, self.backup_dir, self.epochs = tmp, backup_dir, epochs
        self.procs: dict[int, subprocess.Popen] = {}
        self.logs: dict[int, Path] = {}
        self.starts = {0: 0, 1: 0}
        self.workers: list[str] = []

    def new_cluster(self) -> None:
        # Fresh ports for every (re)start: the old ones may still be held by the dead process.
        self.workers = [f"127.0.0.1:{port}" for port in _free_ports(2)]

    def start(self, index: int) -> None:
        self.starts[index] += 1
        config = {"cluster": {"worker": self.workers}, "task": {"type": "worker", "index": index}}
        log = self.tmp / f"worker{index}-run{self.starts[index]}.log"
        with open(log, "w") as out:
            self.procs[index] = subprocess.Popen(
                [
                    sys.executable,
                    str(WORKER),
                    "multiworker",
                    str(self.backup_dir),
                    str(self.epochs),
                ],
                env=_env(TF_CONFIG=json.dumps(config)),
                stdout=out,
                stderr=subprocess.STDOUT,
                text=True,
            )
        self.logs[index] = log

    def records(self, index: int) -> list[dict]:
        return _records(self.logs[index].read_text())

    def wait_for(self, predicate, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            if any(p.poll() not in (None, 0) for p in self.procs.values()) and not predicate():
                break
            time.sleep(0.2)
        raise AssertionError(f"timed out waiting for {what}:\n{self.dump()}")

    def dump(self) -> str:
        return "\n".join(
            f"--- worker {i} ---\n{log.read_text()[-3000:]}" for i, log in self.logs.items()
        )

    def kill_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)


def test_multi_worker_run_survives_sigkill_of_one_worker(tmp_path):
    epochs = 6
    backup = tmp_path / "backup"
    cluster = _Cluster(tmp_path, backup, epochs)
    try:
        cluster.new_cluster()
        cluster.start(0)
        cluster.start(1)

        def finished_epoch(index: int, epoch: int) -> bool:
            return any(
                r.get("event") == "epoch_end" and r["epoch"] >= epoch
                for r in cluster.records(index)
            )

        # Let two epochs finish (BackupAndRestore has written a backup), then kill worker 1.
        cluster.wait_for(lambda: finished_epoch(1, 1), 180, "two epochs on worker 1")
        first = cluster.records(0)[0]
        assert first["replicas"] == 2 and first["chief"] is True
        assert cluster.records(1)[0]["chief"] is False
        cluster.procs[1].send_signal(signal.SIGKILL)
        cluster.procs[1].wait(timeout=30)
        # The survivor cannot finish its collectives without its peer: it fails (or we stop it),
        # as a cluster manager would see it; then the cluster restarts from the backup.
        try:
            cluster.procs[0].wait(timeout=60)
        except subprocess.TimeoutExpired:
            cluster.procs[0].kill()
            cluster.procs[0].wait(timeout=30)
        assert not finished_epoch(0, epochs - 1), "worker 0 finished without its peer"
        killed_at = max(r["epoch"] for r in cluster.records(1) if r.get("event") == "epoch_end")

        cluster.new_cluster()
        cluster.start(0)
        cluster.start(1)
        for index in (0, 1):
            cluster.procs[index].wait(timeout=240)
        assert all(p.returncode == 0 for p in cluster.procs.values()), cluster.dump()
        for index in (0, 1):
            records = cluster.records(index)
            begins = [r["epoch"] for r in records if r.get("event") == "epoch_begin"]
            # Resumed after the last backed-up epoch, not from scratch, and ran to the end.
            assert 0 < begins[0] <= killed_at + 1
            assert begins[-1] == epochs - 1
            done = records[-1]
            assert done["event"] == "done"
    finally:
        cluster.kill_all()
