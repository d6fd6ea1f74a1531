"""The end-to-end benchmark's own tools: the latency proxy, the profile reader, the sets."""

from __future__ import annotations

import gc
import importlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from ingest_common.telemetry import metrics

ROOT = Path(__file__).resolve().parents[2]


def _load(name: str) -> ModuleType:
    sys.path.insert(0, str(ROOT / "bench"))
    return importlib.import_module(name)


latency = _load("latency")
procstat = _load("procstat")
e2e = _load("e2e")


class _Echo(BaseHTTPRequestHandler):
    def do_PUT(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def echo() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_the_proxy_delays_each_request_and_passes_bodies_intact(echo: str) -> None:
    body = bytes(range(256)) * 1024  # several reads' worth: delayed once, not per chunk
    with latency.delay_proxy(echo, 0.25) as endpoint:
        for _ in range(2):
            started = time.monotonic()
            request = urllib.request.Request(endpoint, data=body, method="PUT")
            with urllib.request.urlopen(request, timeout=10) as response:
                assert response.read() == body
            assert time.monotonic() - started >= 0.25


def test_top_frames_counts_a_function_once_per_sample(tmp_path: Path) -> None:
    profile = tmp_path / "p.txt"
    profile.write_text("main;loop;put;sign 3\nmain;loop;put 1\nmain;loop;recurse;recurse 4\n")
    top = dict(e2e.top_frames(profile))
    assert top["main"] == 1.0
    assert top["put"] == 0.5
    assert top["sign"] == 3 / 8
    assert top["recurse"] == 0.5  # on the stack twice, counted once


def test_sets_name_every_file_once_and_list_them_in_the_manifest(tmp_path: Path) -> None:
    svgs = e2e.load_svgs([ROOT / "sample"], 60)  # more than the sample has: repeated
    assert len({name for name, _ in svgs}) == 60
    folder = e2e.write_set(tmp_path / "set", svgs, "A set", "a-family")
    manifest = json.loads((folder / "manifest.json").read_text())
    assert [f["path"] for f in manifest["files"]] == sorted(p.name for p in folder.glob("*.svg"))


def test_held_seconds_read_the_render_lanes_busy_seconds_as_the_processor_serves_them() -> None:
    metrics.configure_metrics("tests")  # once per process; later calls keep the first
    metrics.watch_render_pool("render", lambda: 12.5, 2)
    metrics.watch_render_pool("slow", lambda: 99.0, 1)  # another lane: not counted
    try:
        text = metrics.prometheus_text()
    finally:
        metrics.unwatch_render_pool("render")
        metrics.unwatch_render_pool("slow")
    assert text is not None
    assert e2e.held_seconds_in(text.decode()) == 12.5
    assert e2e.held_seconds_in("") == 0.0  # before the first render: no series yet


def _scenario(window: float, cpu_seconds: float, wall: float) -> Any:
    return e2e.Scenario(
        name="one set",
        images=100,
        sets=1,
        wall=wall,
        searchable=[wall],
        stages={},
        render_window=window,
        render_busy=0.5,
        render_held=0.5,
        cpu=e2e.Cpu(render_workers=cpu_seconds),
        traced_calls=0,
        requests={},
    )


def test_scale_out_is_judged_only_where_one_processor_left_the_cpus_free(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(e2e.os, "sched_getaffinity", lambda pid: {0, 1})
    args = e2e.parse_args(["--processors", "1", "2"])
    assert args.processors == [1, 2]
    free = _scenario(window=20.0, cpu_seconds=8.0, wall=20.0)  # 20 % of two CPUs
    assert e2e.scale_out(args, {1: [free], 2: [_scenario(10.5, 8.0, 10.5)]}) == []
    assert "1.90×" in capsys.readouterr().out
    assert e2e.scale_out(args, {1: [free], 2: [_scenario(15.0, 8.0, 15.0)]}) == [
        "one set: 1 → 2 processors, render window gain"
    ]
    busy = _scenario(window=20.0, cpu_seconds=30.0, wall=20.0)  # 75 % of two CPUs
    assert e2e.scale_out(args, {1: [busy], 2: [_scenario(15.0, 30.0, 15.0)]}) == []
    assert "not judged, 75% of the CPUs were busy with 1" in capsys.readouterr().out
    assert e2e.scale_out(e2e.parse_args([]), {1: [free]}) == []


def test_an_emulator_apart_is_not_counted_as_busy_on_the_stacks_cpus(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(e2e.os, "sched_getaffinity", lambda pid: {0, 1})
    busy_emulator = _scenario(window=20.0, cpu_seconds=8.0, wall=20.0)
    busy_emulator.cpu.emulator = 22.0  # with the render workers' 8: 75 % of two CPUs
    after = _scenario(10.5, 8.0, 10.5)
    shared = e2e.parse_args(["--processors", "1", "2"])
    assert e2e.scale_out(shared, {1: [busy_emulator], 2: [after]}) == []
    assert "not judged, 75% of the CPUs were busy" in capsys.readouterr().out
    apart = e2e.parse_args(["--processors", "1", "2", "--emulator-cpus", "1"])
    assert e2e.scale_out(apart, {1: [busy_emulator], 2: [after]}) == []
    assert "PASS" in capsys.readouterr().out  # judged on ingest's 20 %


def test_the_emulators_cpus_are_the_last_and_what_it_starts_runs_on_them() -> None:
    cpus = sorted(os.sched_getaffinity(0))
    assert procstat.split_cpus(0) == (set(cpus), set())
    with pytest.raises(ValueError, match="leaves none"):
        procstat.split_cpus(len(cpus))
    if len(cpus) < 2:
        pytest.skip("one CPU: nothing to set apart")
    stack, emulator = procstat.split_cpus(1)
    assert (stack, emulator) == (set(cpus[:-1]), {cpus[-1]})
    show = [sys.executable, "-c", "import os; print(sorted(os.sched_getaffinity(0)))"]
    with procstat.on_cpus(emulator):
        inside = subprocess.run(show, capture_output=True, text=True, check=True).stdout
    assert inside.strip() == str(sorted(emulator))
    assert os.sched_getaffinity(0) == set(cpus)  # restored
    with procstat.on_cpus(set()):
        assert os.sched_getaffinity(0) == set(cpus)
    assert procstat.set_emulator_apart(0) == set()  # nothing apart: nothing pinned
    assert os.sched_getaffinity(0) == set(cpus)
    with pytest.raises(SystemExit, match=r"--emulator-cpus: .* leaves none"):
        procstat.set_emulator_apart(len(cpus))


def test_the_cpu_splits_into_per_image_and_per_set_work(
    capsys: pytest.CaptureFixture[str],
) -> None:
    def run(images: int, sets: int) -> Any:
        # 2 ms per image and 40 ms per set in the batcher; the render workers only per image.
        cpu = e2e.Cpu(
            render_workers=0.030 * images, services={"batcher": 0.002 * images + 0.040 * sets}
        )
        result = _scenario(window=1.0, cpu_seconds=0.0, wall=1.0)
        result.images, result.sets, result.cpu = images, sets, cpu
        return result

    split = e2e.per_image_and_set(run(500, 1), run(500, 20))

    assert split["batcher main"] == pytest.approx((2.0, 40.0))
    assert split["render workers"] == pytest.approx((30.0, 0.0), abs=1e-9)
    assert split["ingest's own (mains)"] == pytest.approx((2.0, 40.0))
    with pytest.raises(ValueError, match="as many images per set"):
        e2e.per_image_and_set(run(500, 1), run(1000, 2))
    assert e2e.report_split(run(500, 1), run(1000, 2)) == {}  # said, not raised
    assert "no split per image and per set" in capsys.readouterr().out


def test_the_proxy_ends_the_connections_still_open_when_it_closes() -> None:
    """A connection still open when the proxy closes ends with it, on its loop: its pipes
    are not left to be collected after the loop has gone (an error nobody can catch)."""
    unraisable: list[Any] = []
    hook, sys.unraisablehook = sys.unraisablehook, unraisable.append
    # A server that never answers: the kernel accepts its connections, nobody reads them.
    with socket.create_server(("127.0.0.1", 0)) as silent:
        target = f"http://127.0.0.1:{silent.getsockname()[1]}"
        try:
            with latency.delay_proxy(target, 0.0) as endpoint:
                host, _, port = endpoint.removeprefix("http://").partition(":")
                client = socket.create_connection((host, int(port)))
                client.sendall(b"PUT / HTTP/1.1\r\nHost: silent\r\n\r\n")
                time.sleep(0.2)  # the proxy has connected both ways and piped the request
            client.close()
            gc.collect()
        finally:
            sys.unraisablehook = hook
    assert unraisable == []


# A process in a CPU quota group, in a fresh interpreter: what a processor started there sees,
# the CPU it gets, and a multiprocessing resource tracker started there that outlives the
# group's use (a render pool's), which must not keep the group from being removed.
_IN_A_TASK = """
import json, multiprocessing.resource_tracker, os, sys, time
sys.path.insert(0, sys.argv[1])
import procstat
from ingest_common.cpus import available_cpus
from ingest_processor.settings import ProcessorSettings

with procstat.cpu_quota_group(f"ingest-test-{os.getpid()}", 0.5) as group:
    with group.joined():
        settings, cpus = ProcessorSettings(), available_cpus()
        multiprocessing.resource_tracker.ensure_running()
        tracker = multiprocessing.resource_tracker._resource_tracker._pid
        # Only the loop's CPU: the interpreter's start and imports came before it.
        started, cpu_before = time.monotonic(), time.process_time()
        while time.monotonic() - started < 1.0:
            pass
        cpu = (time.process_time() - cpu_before) / (time.monotonic() - started)
        inside = open("/proc/self/cgroup").read()
    print(json.dumps({
        "cpus": cpus,
        "workers": settings.render_workers,
        "concurrency": settings.concurrency,
        "cpu_share": cpu,
        "inside": inside,
        "after": open("/proc/self/cgroup").read(),
        "group": str(group.folder),
        "tracker_in_group": str(tracker) in (group.folder / "cgroup.procs").read_text().split(),
    }))
print(json.dumps({"removed": not group.folder.exists()}))
"""


def test_a_processor_in_a_task_of_half_a_cpu_sizes_itself_from_it_and_gets_no_more() -> None:
    try:
        with procstat.cpu_quota_group(f"ingest-test-probe-{os.getpid()}", 0.5):
            pass
    except procstat.CpuQuotaUnavailable as exc:
        pytest.skip(f"no writable cgroup CPU controller here (root needed): {exc}")
    done = subprocess.run(
        [sys.executable, "-c", _IN_A_TASK, str(ROOT / "bench")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    inside, removed = (json.loads(line) for line in done.stdout.splitlines())
    group = Path(inside["group"]).name
    assert f"/{group}" in inside["inside"]  # joined,
    assert group not in inside["after"]  # then home
    # Half a CPU's time: one render worker and the in-flight messages of one (the defaults
    # follow the quota, as in an ECS task of 512 CPU units on a larger host).
    assert inside["cpus"] == 1
    assert inside["workers"] == 1
    assert inside["concurrency"] == e2e.ProcessorSettings(render_workers=1).concurrency
    # At most its quota, whatever else the machine runs (busy looping for a second).
    assert inside["cpu_share"] < 0.7
    # The tracker started in the group outlived the process's stay there, and the group was
    # still removed: it went home first.
    assert inside["tracker_in_group"]
    assert removed == {"removed": True}


def test_processor_cpus_is_a_positive_quota() -> None:
    assert e2e.parse_args([]).processor_cpus is None
    assert e2e.parse_args(["--processor-cpus", "0.5"]).processor_cpus == 0.5
    with pytest.raises(SystemExit):
        e2e.parse_args(["--processor-cpus", "0"])


def test_the_cpu_side_of_the_bill_is_ms_per_image_in_cpu_hours_per_million() -> None:
    assert e2e.vcpu_hours_per_million(3.6) == pytest.approx(1.0)  # 3,600 s per million
    assert e2e.vcpu_hours_per_million(27.0) == pytest.approx(7.5)
