"""The harness's py-spy summary (benchmarks/profiling.py): which part of the program a frame belongs to, and
the shares it reports from collapsed stacks."""

from __future__ import annotations

import pytest

from benchmarks.profiling import REPOSITORY, Profile, component, render

SITE = "/srv/venv/lib/python3.11/site-packages"
STDLIB = "/usr/lib/python3.11"
ENTRY = f'process 10:"python -m rushgate serve";process 11:"python -c spawn";main ({REPOSITORY}/rushgate/cli.py:40)'
LOOP = f"run ({STDLIB}/asyncio/runners.py:180);Runner.run ({STDLIB}/asyncio/runners.py:86)"
SERVE = f"HotIntake._serve ({REPOSITORY}/intake/hot_path.py:120)"


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        (f"{SITE}/redis/asyncio/client.py", "redis"),
        ("/usr/lib/python3/dist-packages/msgspec/__init__.py", "msgspec"),
        (f"{SITE}/six.py", "six"),
        (f"{REPOSITORY}/reservation/pipelined.py", "reservation"),
        (f"{REPOSITORY}/intake/hot_path.py", "intake"),
        (f"{STDLIB}/asyncio/events.py", "asyncio"),
        (f"{STDLIB}/json/decoder.py", "stdlib"),
        (f"{STDLIB}/contextlib.py", "stdlib"),
        (f"{REPOSITORY}/tests/support.py", "other"),  # in the repository, but none of its packages
        ("<string>", "other"),
        ("/tmp/worker.py", "other"),
    ],
)
def test_a_frame_belongs_to_its_package_asyncio_the_standard_library_or_rushgate(path: str, expected: str) -> None:
    assert component(path) == expected


def collapsed() -> str:
    return "\n".join(
        [
            f"{ENTRY};{LOOP} 50",  # the event loop's own native code: Runner.run innermost
            f"{ENTRY};{LOOP};{SERVE};decode_body ({REPOSITORY}/intake/codec.py:10) 30",
            f"{ENTRY};{LOOP};{SERVE};Redis.send ({SITE}/redis/asyncio/client.py:5) 20",
            "",
            "a line that is not a stack",
            'process 10:"python -m rushgate serve" 7',  # a process frame alone: no Python frame to count
        ]
    )


def test_shares_are_of_all_samples_on_cpu_by_innermost_frame_and_by_frames_beneath() -> None:
    profile = Profile()
    profile.add_collapsed(collapsed())
    summary = profile.summary()
    assert summary["samples"] == 100
    assert summary["components"] == {"asyncio": 0.5, "intake": 0.3, "redis": 0.2}
    assert summary["self"] == {
        "Runner.run (runners.py)": 0.5,
        "decode_body (codec.py)": 0.3,
        "Redis.send (client.py)": 0.2,
    }
    # rushgate's own functions only, and not main (cli.py), through which every sample passes
    assert summary["within"] == {"HotIntake._serve (hot_path.py)": 0.5, "decode_body (codec.py)": 0.3}


def test_recordings_add_up() -> None:
    profile = Profile()
    profile.add_collapsed(collapsed())
    profile.add_collapsed(f"{ENTRY};{LOOP};{SERVE} 100")
    summary = profile.summary()
    assert summary["samples"] == 200
    assert summary["within"]["HotIntake._serve (hot_path.py)"] == 0.75
    assert summary["self"]["HotIntake._serve (hot_path.py)"] == 0.5


def test_the_report_names_the_event_loop_and_a_group_without_samples() -> None:
    profile = Profile()
    profile.add_collapsed(collapsed())
    lines = render("the closed loop", {"api workers": profile.summary(), "sweeper": Profile().summary()}, 1.5)
    text = "\n".join(lines)
    assert "py-spy itself used 1.5 CPU-seconds" in lines[0]
    assert "api workers (100 samples): asyncio 50%, intake 30%, redis 20%" in text
    assert "the event loop (uvloop, system calls) 50.0%" in text
    assert "HotIntake._serve (hot_path.py) 50%" in text
    assert "sweeper: no samples on CPU" in text
