"""Where rushgate's processes spend their CPU during a harness phase: py-spy, summarised.

``python -m benchmarks.e2e --profile DIR`` records, during each of rushgate's measured phases,
the API workers (the server and every worker it forked), the persister and the sweeper with
``py-spy record`` (sampling, no pause of the process), writes each recording to DIR as
collapsed stacks (one line per stack: ``frame;frame;... count``, which flamegraph.pl and
speedscope read) and prints what the samples say: the share of each component (a package
such as uvicorn, msgspec or redis; asyncio; the rest of the standard library; each of
rushgate's packages) among the frames on CPU, and the functions most often on CPU themselves
or below them. py-spy counts a thread idle while it waits in a system call such as
``epoll_wait``, and those samples are left out: the shares are of the time a process ran
Python or native code, not of wall-clock time.

py-spy samples from outside the process, but it reads the process's memory RATE_HZ (50) times
a second and uses some CPU itself, so figures measured with ``--profile`` are not comparable
with those of a run without it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from benchmarks.harness import HarnessError

RATE_HZ = 50
ENTRY_SHARE = 0.9  # of the most common frame's samples: at or above it, a frame is the way in (main, run_worker)
EVENT_LOOP = "Runner.run (runners.py)"  # innermost Python frame while uvloop runs its own native code
STOP_TIMEOUT_S = 30.0
ATTACH_TIMEOUT_S = 20.0
REPOSITORY = Path(__file__).resolve().parents[1]
PACKAGES = ("intake", "reservation", "orders", "persistence", "rushgate", "benchmarks")
_FRAME = re.compile(r"^(?P<function>.*) \((?P<path>.*?)(?::(?P<line>\d+))?\)$")
_SITE = re.compile(r"[/\\](?:site|dist)-packages[/\\](?P<package>[^/\\]+)")
_STDLIB = re.compile(r"[/\\]lib[/\\]python3\.\d+[/\\](?P<module>[^/\\]+)")


def py_spy_executable() -> str | None:
    """py-spy beside this interpreter (a venv's bin), else on PATH."""
    beside = Path(sys.executable).parent / "py-spy"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("py-spy")


def component(path: str) -> str:
    """The part of the program a frame's file belongs to: an installed package, asyncio, the rest of the
    standard library, one of this repository's packages, or 'other'."""
    site = _SITE.search(path)
    if site:
        return site.group("package").split(".")[0].removesuffix(".py")
    try:
        relative = Path(path).resolve().relative_to(REPOSITORY)
    except ValueError:
        relative = None
    if relative is not None and relative.parts and relative.parts[0] in PACKAGES:
        return relative.parts[0]
    stdlib = _STDLIB.search(path)
    if stdlib:
        module = stdlib.group("module").removesuffix(".py")
        return "asyncio" if module == "asyncio" else "stdlib"
    return "other"


def _frames(stack: str) -> list[str]:
    """The stack's frames, outermost first, without the 'process N:"command"' frames of --subprocesses."""
    return [frame for frame in stack.split(";") if not frame.startswith("process ")]


@functools.cache
def _function(frame: str) -> tuple[str, str]:
    """(function with its file's name, component) of one py-spy frame such as 'send (/x/redis/client.py:12)'.
    Cached: a recording repeats the same few hundred frames in thousands of stacks, and component() resolves
    the frame's path on the file system."""
    match = _FRAME.match(frame)
    if match is None:
        return frame, "other"
    path = match.group("path")
    return f"{match.group('function')} ({Path(path).name})", component(path)


@dataclass
class Profile:
    """Samples of one or more recordings of one process group, by component and function."""

    samples: int = 0
    by_component: Counter[str] = field(default_factory=Counter)  # samples whose innermost frame is there
    self_samples: Counter[str] = field(default_factory=Counter)  # samples with the function innermost
    total_samples: Counter[str] = field(default_factory=Counter)  # samples with the function anywhere
    ours: set[str] = field(default_factory=set)  # functions of this repository's packages

    def add_collapsed(self, text: str) -> None:
        """Add py-spy's raw (collapsed) output: one stack per line, its sample count last."""
        for line in text.splitlines():
            stack, _, count_text = line.rstrip().rpartition(" ")
            if not stack or not count_text.isdigit():
                continue
            frames = _frames(stack)
            if not frames:
                continue
            count = int(count_text)
            functions = [_function(frame) for frame in frames]
            self.samples += count
            innermost, where = functions[-1]
            self.by_component[where] += count
            self.self_samples[innermost] += count
            for name in {name for name, _ in functions}:
                self.total_samples[name] += count
            self.ours.update(name for name, where in functions if where in PACKAGES)

    def share(self, counter: Counter[str], top: int) -> list[tuple[str, float]]:
        """The top entries of one of the counters, as fractions of all samples."""
        if not self.samples:
            return []
        return [(name, count / self.samples) for name, count in counter.most_common(top)]

    def summary(self, top: int = 8) -> dict[str, Any]:
        """Shares of all samples: every component; the top functions on CPU themselves; and the top functions
        of this repository on CPU themselves or beneath them, without the ways in (the process's main and
        worker entry points, which nearly every sample passes through)."""
        entry = ENTRY_SHARE * max(self.total_samples.values(), default=0)
        within = Counter({name: count for name, count in self.total_samples.items()
                          if name in self.ours and count < entry})  # fmt: skip
        return {
            "samples": self.samples,
            "components": dict(self.share(self.by_component, len(self.by_component))),
            "self": dict(self.share(self.self_samples, top)),
            "within": dict(self.share(within, top)),
        }


def merged(paths: Iterable[Path]) -> Profile:
    profile = Profile()
    for path in paths:
        profile.add_collapsed(path.read_text(errors="replace"))
    return profile


class Recorder:
    """py-spy record of one process (and, with subprocesses, every process it forked) until stop()."""

    def __init__(self, pid: int, out: Path, *, subprocesses: bool = False, rate_hz: int = RATE_HZ) -> None:
        executable = py_spy_executable()
        if executable is None:
            raise HarnessError("py-spy not found: pip install py-spy")
        self.out = out
        self.argv = [
            executable, "record", "--pid", str(pid), "--rate", str(rate_hz), "--nonblocking", "--function",
            "--full-filenames", "--format", "raw", "--output", str(out),
            *(["--subprocesses"] if subprocesses else []),
        ]  # fmt: skip
        self._log = out.with_suffix(".log")
        self.process: subprocess.Popen[bytes] | None = None
        self.cpu_s = 0.0  # py-spy's own CPU, read when it stopped

    def sampling(self) -> bool:
        """Whether py-spy has attached and begun sampling (it says so in its log)."""
        try:
            return "Sampling process" in self._log.read_text(errors="replace")
        except OSError:
            return False

    def start(self) -> Recorder:
        self.out.parent.mkdir(parents=True, exist_ok=True)
        with open(self._log, "wb") as log:
            self.process = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        return self

    async def wait_sampling(self, timeout_s: float = ATTACH_TIMEOUT_S) -> None:
        """Return once py-spy samples; a py-spy that exited or did not attach in time stops the run."""
        assert self.process is not None, "not started"
        deadline = time.monotonic() + timeout_s
        while not self.sampling():
            if self.process.poll() is not None or time.monotonic() > deadline:
                log = self._log.read_text(errors="replace")[-2000:]
                raise HarnessError(f"py-spy did not start sampling ({' '.join(self.argv)}):\n{log}")
            await asyncio.sleep(0.05)

    def abandon(self) -> None:
        """Kill py-spy if it still runs (a phase failed before stop)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def stop(self) -> Path:
        """Stop sampling (SIGINT: py-spy then writes what it has) and return the recording."""
        process = self.process
        assert process is not None, "not started"
        if process.poll() is None:
            with contextlib.suppress(psutil.Error):
                self.cpu_s = _cpu_s(process.pid)
            process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if not self.out.is_file():
            log = self._log.read_text(errors="replace")[-2000:]
            raise HarnessError(f"py-spy wrote no recording to {self.out} (exit {process.returncode}):\n{log}")
        return self.out


def _cpu_s(pid: int) -> float:
    """A running process's CPU seconds. psutil counts clock ticks (10 ms), which a short recording
    of a quiet process can stay under; Linux's per-thread schedstat counts nanoseconds, but only
    for the threads still alive: the larger of the two."""
    times = psutil.Process(pid).cpu_times()
    ticks_s = times.user + times.system
    try:
        nanoseconds = 0
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/schedstat") as schedstat:
                nanoseconds += int(schedstat.read().split()[0])
    except (OSError, ValueError, IndexError):
        return ticks_s
    return max(ticks_s, nanoseconds / 1e9)


def render(label: str, summaries: dict[str, dict[str, Any]], profiler_cpu_s: float | None = None) -> list[str]:
    """Report lines for one phase, from each process group's Profile.summary()."""
    own = f"; py-spy itself used {profiler_cpu_s:.1f} CPU-seconds" if profiler_cpu_s is not None else ""
    lines = [f"profile of {label} (py-spy at {RATE_HZ} Hz{own}; shares of the samples on CPU):"]
    for group, summary in summaries.items():
        if not summary["samples"]:
            lines.append(f"  {group}: no samples on CPU")
            continue
        parts = ", ".join(f"{name} {share:.0%}" for name, share in summary["components"].items())
        lines.append(f"  {group} ({summary['samples']:,} samples): {parts}")
        itself = ", ".join(
            f"{'the event loop (uvloop, system calls)' if name == EVENT_LOOP else name} {share:.1%}"
            for name, share in summary["self"].items()
        )
        lines.append(f"    on CPU itself: {itself}")
        within = ", ".join(f"{name} {share:.0%}" for name, share in summary["within"].items())
        lines.append(f"    rushgate's functions, on CPU or beneath: {within}")
    return lines
