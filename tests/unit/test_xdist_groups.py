"""`make test` relies on pytest-xdist's `--dist loadgroup`: the outage cases run in
OUTAGE_LANES lanes (no more of them at once, each on one worker), and a module whose tests
share one costly fixture runs on one worker. Nothing fails when the groups are ignored: every
test still passes, spread over every worker (with pytest 9.2, pytest-dev/pytest-xdist#1386;
and a group added at collection in a worker never took). So this runs a small suite through
tests/conftest.py's own hook, as `make test` runs ours, and checks where each test ran."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

from tests.conftest import OUTAGE_LANES, ROOT

_CONFTEST = "from tests.conftest import pytest_collection_modifyitems  # noqa: F401\n"
_GROUPED_MODULE = """
import pytest

pytestmark = pytest.mark.xdist_group("module")

@pytest.mark.parametrize("n", range(6))
def test_grouped(n):
    pass
"""
# The ungrouped tests take a second each. xdist hands the next work unit to whichever worker
# runs low first, so six instant ones can all go to a worker that started before the others
# (seen once in CI); at a second each, the other workers report long before the sixth.
_MARKED_MODULE = """
import time

import pytest

@pytest.mark.outage
@pytest.mark.parametrize("n", range(6))
def test_outage(n):
    pass

@pytest.mark.parametrize("n", range(6))
def test_free(n):
    time.sleep(1)
"""
# "[gw1] [ 40%] PASSED test_marked.py::test_outage[3]@outage-1"
_RESULT = re.compile(r"^\[(gw\d+)\].* PASSED (\S+?)\[\d+\](?:@(\S+))?\s*$")


def test_loadgroup_runs_each_group_on_one_worker(tmp_path: Path) -> None:
    (tmp_path / "pytest.ini").write_text("[pytest]\nmarkers =\n    outage: an outage case\n")
    (tmp_path / "conftest.py").write_text(_CONFTEST)
    (tmp_path / "test_grouped.py").write_text(_GROUPED_MODULE)
    (tmp_path / "test_marked.py").write_text(_MARKED_MODULE)
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-v"]
    run = subprocess.run(
        [*command, "-n", "3", "--dist", "loadgroup"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout + run.stderr

    workers: dict[tuple[str, str | None], set[str]] = defaultdict(set)
    for line in run.stdout.splitlines():
        if match := _RESULT.match(line):
            worker, test, group = match.groups()
            workers[test, group].add(worker)
    lanes = {("test_marked.py::test_outage", f"outage-{n}") for n in range(OUTAGE_LANES)}
    grouped = {("test_grouped.py::test_grouped", "module"), *lanes}
    assert set(workers) == {*grouped, ("test_marked.py::test_free", None)}, run.stdout
    for group in grouped:
        assert len(workers[group]) == 1, (group, workers)
    # The ungrouped ones spread: one worker per group is not true of any test.
    assert len(workers["test_marked.py::test_free", None]) > 1, workers
