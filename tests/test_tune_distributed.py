"""Distributed tuning: a chief and two workers of KerasTuner's own mode, on loopback."""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent / "_tune_distributed.py"
TIMEOUT = 420  # seconds for the whole search; three TF processes share two cores


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_chief_and_two_workers_record_every_trial_once(tmp_path):
    port, max_trials = _free_port(), 4
    procs = {}
    for tuner_id in ("chief", "tuner0", "tuner1"):
        env = dict(os.environ, KERASTUNER_TUNER_ID=tuner_id, KERASTUNER_ORACLE_IP="127.0.0.1",
                   KERASTUNER_ORACLE_PORT=str(port), TF_CPP_MIN_LOG_LEVEL="2")
        out = tmp_path / f"{tuner_id}.json"
        log = open(tmp_path / f"{tuner_id}.log", "w")
        procs[tuner_id] = (subprocess.Popen(
            [sys.executable, str(SCRIPT), str(tmp_path / "search"), str(out), str(max_trials)],
            env=env, stdout=log, stderr=subprocess.STDOUT), out, log)
        if tuner_id == "chief":
            time.sleep(2)  # workers wait for the server anyway (gRPC wait_for_ready)
    deadline = time.monotonic() + TIMEOUT
    try:
        for proc, _, _ in procs.values():
            proc.wait(timeout=max(1, deadline - time.monotonic()))
    finally:
        for proc, _, log in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            log.close()
    logs = {t: (tmp_path / f"{t}.log").read_text()[-3000:] for t in procs}
    for tuner_id, (proc, out, _) in procs.items():
        assert proc.returncode == 0 and out.exists(), f"{tuner_id} failed:\n{logs[tuner_id]}"
    results = {t: json.loads(out.read_text()) for t, (_, out, _) in procs.items()}
    chief = results["chief"]
    ids = [t["trial_id"] for t in chief["trials"]]
    assert len(ids) == len(set(ids)) == max_trials
    assert all(t["status"] == "COMPLETED" and t["score"] is not None for t in chief["trials"])
    ran = results["tuner0"]["trials_run"] + results["tuner1"]["trials_run"]
    assert sorted(ran) == sorted(ids)  # every trial run by exactly one worker, none twice
    assert chief["trials_run"] == []  # the chief only serves the oracle
    assert chief["best_model_source"] == "restored"
