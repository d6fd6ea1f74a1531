"""The topology is declared once; bootstrap and deploy/terraform must agree with it."""

from __future__ import annotations

import json
import re
from importlib import resources
from pathlib import Path

from ingest_common.settings import IngestSettings
from ingest_common.topology import dead_letter_queue, load_topology

ROOT = Path(__file__).resolve().parents[2]
TERRAFORM = ROOT / "deploy" / "terraform"


def terraform_defaults() -> dict[str, str]:
    text = (TERRAFORM / "variables.tf").read_text()
    pattern = re.compile(r'variable\s+"(\w+)"\s*\{[^}]*?default\s*=\s*"([^"]*)"', re.S)
    return dict(pattern.findall(text))


def test_terraform_reads_the_same_topology_file() -> None:
    text = (TERRAFORM / "topology.tf").read_text()
    match = re.search(r'file\("\$\{path\.module\}/([^"]+)"\)', text)
    assert match, "topology.tf must read topology.json with file()"
    assert (TERRAFORM / match[1]).resolve() == Path(
        str(resources.files("ingest_common").joinpath("topology.json"))
    ).resolve()


def test_terraform_names_default_to_the_settings_defaults() -> None:
    settings = IngestSettings()
    topology = load_topology(settings)
    defaults = terraform_defaults()
    for queue in topology.queues:
        raw = json.loads(resources.files("ingest_common").joinpath("topology.json").read_text())
        setting = raw["queues"][queue.role]["setting"]
        assert defaults[setting] == queue.name == getattr(settings, setting)
        assert queue.dead_letter_name == dead_letter_queue(queue.name)
    for bucket in topology.buckets:
        assert bucket.name in defaults.values()


def test_every_service_queue_has_a_topology_entry() -> None:
    settings = IngestSettings()
    names = {q.name for q in load_topology(settings).queues}
    assert names == {
        settings.batch_queue,
        settings.render_queue,
        settings.preview_queue,
        settings.index_queue,
    }
