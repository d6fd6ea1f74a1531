"""The README documents every setting, in a table generated from the settings classes."""

from __future__ import annotations

import runpy
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_readme_settings_table_is_current() -> None:
    table = runpy.run_path(str(ROOT / "tools" / "settings_table.py"))["settings_table"]()
    readme = (ROOT / "README.md").read_text()
    assert table in readme, "run `uv run python tools/settings_table.py` and update README.md"


def test_readme_limits_table_is_current() -> None:
    """Every limit is a setting, and the README's table of them is generated from them."""
    table = runpy.run_path(str(ROOT / "tools" / "settings_table.py"))["limits_table"]()
    readme = (ROOT / "README.md").read_text()
    assert table.count("\n") >= 10, "the limits are found"
    assert table in readme, "run `uv run python tools/settings_table.py limits`, update README"


def test_readme_event_examples_are_current() -> None:
    """Every event type has an example in the README, built from its model."""
    examples = runpy.run_path(str(ROOT / "tools" / "events_doc.py"))["examples"]()
    readme = (ROOT / "README.md").read_text()
    assert examples in readme, "run `uv run python tools/events_doc.py` and update README.md"
