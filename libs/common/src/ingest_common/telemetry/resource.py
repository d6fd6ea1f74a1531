"""The OpenTelemetry resource every service reports: who sent this span or metric.

`service.name` (per service), `service.namespace`, `service.version` (the package's),
`host.name`, `process.pid`, `container.id` (when in a container: the cgroup files, read by
opentelemetry-resource-detector-containerid) and, on ECS, what the AWS ECS detector reads
from ECS_CONTAINER_METADATA_URI_V4 (cluster, task ARN and family, container ARN, log
group). OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME are honoured by the SDK and win over
these.
"""

from __future__ import annotations

import os
import platform
import re
import socket
from importlib import metadata

import structlog
from opentelemetry.resource.detector.containerid import ContainerResourceDetector
from opentelemetry.sdk.resources import (
    Attributes,
    OTELResourceDetector,
    Resource,
    get_aggregated_resources,
)
from opentelemetry.util.types import AttributeValue

log = structlog.get_logger("ingest.telemetry")

# What Docker, containerd, CRI-O and Podman name a container by.
_CONTAINER_ID = re.compile(r"[0-9a-f]{64}")


def build_resource(service: str) -> Resource:
    attributes: dict[str, AttributeValue] = {
        "service.name": service,
        "service.namespace": "ingest",
        "service.version": service_version(service),
        "host.name": socket.gethostname(),
        "process.pid": os.getpid(),
        "process.runtime.name": platform.python_implementation().lower(),
        "process.runtime.version": platform.python_version(),
    }
    if container := container_id():
        attributes["container.id"] = container
    resource = Resource.create(attributes)
    if os.environ.get("ECS_CONTAINER_METADATA_URI_V4") or os.environ.get(
        "ECS_CONTAINER_METADATA_URI"
    ):
        resource = resource.merge(_ecs_resource())
    # The SDK's rule: OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES win over ours and the
    # detected ones (Resource.create lets the attributes passed in win, so merge them last).
    resource = resource.merge(OTELResourceDetector().detect())
    return HashedOnceResource(resource.attributes, resource.schema_url)


class HashedOnceResource(Resource):
    """A Resource that computes its hash once.

    The OTLP exporters group every span and metric point they export by resource, and
    `Resource.__hash__` serialises every attribute to JSON each time: a seventh of a busy
    processor's export CPU. A resource's attributes cannot change, so neither can its hash.
    """

    def __init__(self, attributes: Attributes, schema_url: str | None = None) -> None:
        super().__init__(attributes, schema_url)
        self._hash = super().__hash__()

    def __hash__(self) -> int:
        return self._hash


def service_version(service: str) -> str:
    for package in (f"ingest-{service}", "ingest-common"):
        try:
            return metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return "unknown"


def container_id() -> str | None:
    """The container's id, from the detector; None outside a container.

    The detector takes the last hex run of a cgroup path for an id, so outside a
    container it can find one: "3" in a systemd session's `session-3.scope`, a sandbox's
    cgroup name. Only a container runtime's 64-hex id is kept.
    """
    try:
        found = ContainerResourceDetector().detect().attributes.get("container.id")
    except Exception as exc:  # the detector must never stop a service from starting
        log.warning("telemetry.container_detector_failed", error=repr(exc))
        return None
    if isinstance(found, str) and _CONTAINER_ID.fullmatch(found):
        return found
    return None


def _ecs_resource() -> Resource:
    """One metadata request at start-up, never per span; a failure only loses attributes."""
    try:
        from opentelemetry.sdk.extension.aws.resource.ecs import AwsEcsResourceDetector

        return get_aggregated_resources([AwsEcsResourceDetector()], timeout=3)
    except Exception as exc:  # the detector must never stop a service from starting
        log.warning("telemetry.ecs_detector_failed", error=repr(exc))
        return Resource.get_empty()
