"""The harness's py-spy recorder (benchmarks/profiling.py) finds where a real process spends its CPU, also in a
worker process that a server forked (as uvicorn's workers are)."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil
import pytest

from benchmarks.e2e import App, Environment, Phases
from benchmarks.harness import Child
from benchmarks.profiling import Recorder, merged, py_spy_executable
from reservation.store import RedisStore
from tests.processes import eventually

pytestmark = pytest.mark.skipif(py_spy_executable() is None, reason="needs py-spy (the test extra installs it)")

SERVER = """
import subprocess, sys
sys.exit(subprocess.call([sys.executable, *sys.argv[1:]]))
"""
# Told to burn by SIGUSR1 (a harness's child has /dev/null for stdin), it counts what it burnt in the file
# named by its argument, and writes "ready" there once the signal is blocked for sigwait.
WORKER = """
import os, signal, sys, time

def burn_the_cpu(seconds):
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass

def tell(text):
    with open(sys.argv[1] + ".tmp", "w") as out:
        out.write(text)
    os.replace(sys.argv[1] + ".tmp", sys.argv[1])

def wait_for_orders():
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
    tell("ready")
    burnt = 0
    while True:
        signal.sigwait({signal.SIGUSR1})
        burn_the_cpu(0.8)
        burnt += 1
        tell(str(burnt))

wait_for_orders()
"""


class Burner:
    """The worker, started directly or under SERVER (which forks it, as uvicorn forks its workers)."""

    def __init__(self, directory: Path, *, forked: bool) -> None:
        (directory / "worker.py").write_text(WORKER)
        (directory / "server.py").write_text(SERVER)
        self.said = directory / "said"
        worker = [str(directory / "worker.py"), str(self.said)]
        self.argv = [sys.executable, str(directory / "server.py"), *worker] if forked else [sys.executable, *worker]
        self.forked = forked

    async def says(self, text: str) -> bool:
        return self.said.is_file() and self.said.read_text() == text

    async def ready(self) -> None:
        await eventually(lambda: self.says("ready"), "the worker to block SIGUSR1")

    async def burn(self, pid: int, times: int) -> dict[str, Any]:
        """Have the worker under pid (itself, or the server that forked it) burn 0.8 s of CPU, the times-th time."""
        worker = psutil.Process(pid).children()[0].pid if self.forked else pid
        os.kill(worker, signal.SIGUSR1)
        await eventually(lambda: self.says(str(times)), f"the worker to burn for the {times}. time")
        return {}


@pytest.mark.parametrize("forked", [False, True], ids=["the process", "a worker it forked"])
async def test_the_recording_puts_the_burning_function_on_top(tmp_path: Path, forked: bool) -> None:
    burner = Burner(tmp_path, forked=forked)
    process = subprocess.Popen(burner.argv)
    try:
        await burner.ready()  # the worker exists before py-spy starts, as uvicorn's do
        recorder = Recorder(process.pid, tmp_path / "recording.txt", subprocesses=forked).start()
        await recorder.wait_sampling()
        await burner.burn(process.pid, 1)
        recording = recorder.stop()
    finally:
        for child in psutil.Process(process.pid).children():
            child.kill()
        process.kill()
        process.wait()
    summary = merged([recording]).summary()
    assert summary["samples"] >= 10  # 0.8 s of CPU at 50 Hz: about 40
    top, share = next(iter(summary["self"].items()))
    assert top == "burn_the_cpu (worker.py)"
    assert share >= 0.7
    assert summary["components"]["other"] >= 0.7  # a file outside the repository and every package
    assert recorder.cpu_s > 0


async def test_a_profiled_phase_records_rushgates_server_and_its_workers_while_the_load_runs(
    tmp_path: Path, store: RedisStore
) -> None:
    """Phases._phase with --profile: py-spy samples rushgate's server and what it forked from before the load
    starts until it ends, and profiles() summarises every run's recording under the phase's name."""
    burner = Burner(tmp_path, forked=True)
    child = Child("rushgate", burner.argv, {}, tmp_path / "server.log").start()
    environment = Environment(tmp_path, "", "", "", "", child_env={})
    environment.apps["rushgate"] = App("rushgate", child, "", [], "/readyz")
    phases = Phases(environment, argparse.Namespace(profile=tmp_path / "profiles"), store)
    try:
        await burner.ready()
        for times in (1, 2):
            await phases._phase(burner.burn(child.pid, times), profile_as="the burning phase")
    finally:
        child.stop()
    profiles = phases.profiles()
    assert list(profiles) == ["the burning phase"]
    workers = profiles["the burning phase"]["groups"]["api workers"]
    assert workers["samples"] >= 20  # two runs of 0.8 s of CPU at 50 Hz: about 80
    assert next(iter(workers["self"])) == "burn_the_cpu (worker.py)"
    assert profiles["the burning phase"]["py-spy cpu_s"] > 0
    assert len(list((tmp_path / "profiles").glob("*-the-burning-phase-api-workers.txt"))) == 2
