"""The topology is declared once; bootstrap and deploy/terraform must agree with it."""

from __future__ import annotations

import json
import re
from importlib import resources
from pathlib import Path

import pytest
from ingest_common.garbage import REJECTED_TAG_KEY, REJECTED_TAG_VALUE
from ingest_common.settings import IngestSettings
from ingest_common.topology import LifecycleRule, dead_letter_queue, load_topology

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


def test_terraform_names_every_topology_entry_by_its_setting() -> None:
    """Queues, buckets, topics and buses: topology.tf's `names` maps each setting the file
    refers to onto the variable of that name, whose default is the setting's default."""
    raw = json.loads(resources.files("ingest_common").joinpath("topology.json").read_text())
    settings = IngestSettings()
    text = (TERRAFORM / "topology.tf").read_text()
    names_block = re.search(r"names = \{([^}]*)\}", text)
    assert names_block, "topology.tf: no `names = { ... }`"
    names = dict(re.findall(r"^\s*(\w+)\s*=\s*var\.(\w+)\s*$", names_block[1], re.M))
    defaults = terraform_defaults()
    sections = ("queues", "buckets", "topics", "buses")
    settings_named = {spec["setting"] for section in sections for spec in raw[section].values()}
    assert {"events_topic", "alarms_topic", "event_bus"} <= settings_named
    for setting in settings_named:
        assert names.get(setting) == setting, f"topology.tf: names.{setting} is not var.{setting}"
        assert defaults.get(setting) == getattr(settings, setting), (
            f"variables.tf: {setting} defaults to {defaults.get(setting)!r},"
            f" the setting to {getattr(settings, setting)!r}"
        )


def test_terraform_topics_and_buses_are_the_loaded_topology() -> None:
    """What `ingest bootstrap` creates (load_topology) is what Terraform names: the same
    topic and bus names by default, and every rule with the file's pattern."""
    settings = IngestSettings()
    topology = load_topology(settings)
    defaults = terraform_defaults()
    raw = json.loads(resources.files("ingest_common").joinpath("topology.json").read_text())
    assert {t.role for t in topology.topics} == set(raw["topics"])
    for topic in topology.topics:
        assert defaults[raw["topics"][topic.role]["setting"]] == topic.name
    for bus in topology.buses:
        assert defaults[raw["buses"][bus.role]["setting"]] == bus.name
        assert bus.rules, f"bus {bus.role} has no rule: events.tf's example target needs one"
        for rule in bus.rules:
            assert rule.pattern == raw["buses"][bus.role]["rules"][rule.name]["pattern"]


def test_every_service_queue_has_a_topology_entry() -> None:
    settings = IngestSettings()
    names = {q.name for q in load_topology(settings).queues}
    assert names == {
        settings.batch_queue,
        settings.render_queue,
        settings.render_slow_queue,
        settings.preview_queue,
        settings.index_queue,
    }


def test_lifecycle_rules_expire_rejected_uploads_and_abort_stale_multipart_uploads() -> None:
    settings = IngestSettings()
    buckets = {b.role: b for b in load_topology(settings).buckets}
    rules = {role: {r.id: r for r in b.lifecycle} for role, b in buckets.items()}

    rejected = rules["uploads"]["expire-rejected-uploads"]
    assert (rejected.prefix, rejected.expiration_days) == ("uploads/", 30)
    # The tag the rule expires is the one the batcher puts on a rejected ZIP.
    assert rejected.tags == ((REJECTED_TAG_KEY, REJECTED_TAG_VALUE),)
    for role in ("uploads", "previews"):
        abort = rules[role]["abort-incomplete-multipart-uploads"]
        assert (abort.prefix, abort.tags, abort.abort_incomplete_multipart_days) == ("", (), 7)


def test_a_lifecycle_rule_s3_would_refuse_fails_on_loading() -> None:
    with pytest.raises(ValueError, match="no action"):
        LifecycleRule("r", "", (), None, None)
    with pytest.raises(ValueError, match="prefix only"):
        LifecycleRule("r", "", (("k", "v"),), None, 7)


def test_terraform_takes_the_lifecycle_rules_from_the_file() -> None:
    """topology.tf reads each bucket's "lifecycle"; s3.tf repeats no number of it."""
    topology = (TERRAFORM / "topology.tf").read_text()
    assert re.search(r"\bb\.lifecycle\b", topology), "topology.tf must read the lifecycle rules"
    s3 = (TERRAFORM / "s3.tf").read_text()
    literal_days = re.findall(r"\b(?:days|days_after_initiation)\s*=\s*\d+", s3)
    assert not literal_days, f"s3.tf hard-codes {literal_days}: declare it in topology.json"
    # One lifecycle configuration per bucket: S3 keeps only one, the last put wins.
    assert len(re.findall(r'resource\s+"aws_s3_bucket_lifecycle_configuration"', s3)) == 1


def test_the_uploads_bucket_lets_browsers_post_from_the_configured_origins() -> None:
    """The API's upload forms are POSTed by browsers straight to the uploads bucket."""
    from ingest_api.settings import ApiSettings

    buckets = {b.role: b for b in load_topology(IngestSettings()).buckets}
    (rule,) = buckets["uploads"].cors
    assert rule.methods == ("POST",)
    assert rule.origins == ("*",)  # settings without INGEST_API_CORS_ORIGINS: the file's
    assert "*" in rule.headers
    assert "ETag" in rule.expose_headers
    assert buckets["previews"].cors == ()
    origins = ("https://shop.example", "https://admin.example")
    api = {b.role: b for b in load_topology(ApiSettings(api_cors_origins=origins)).buckets}
    assert api["uploads"].cors[0].origins == origins
    assert ApiSettings().api_cors_origins == rule.origins
