"""The deploy files, checked statically against the code.

docker-compose.yml, deploy/docker/Dockerfile and deploy/terraform/*.tf are never run on the
development machines (no Docker engine, no Terraform providers), so these tests read them
and compare what they say with the packages, console scripts and settings classes: the
image each compose service builds, the port each service listens on against the port its
health check probes, every INGEST_* variable against the settings fields, the stop grace
periods against the drain timeout, and the Dockerfile's COPY sources against the build
context. Settings are resolved from the container's environment only, never the test's.
The domain events' topic and bus, the alarms, the dashboard and the OpenTelemetry
collectors are checked against topology.json, the outbox, the consumer's outcomes and the
metrics the services export. Each task role's IAM actions are checked against the AWS calls
its code makes (an ast scan of the sources), and the delivery workflows, ECR and the
provider lock against the packages, the Dockerfile and versions.tf.
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import json
import os
import posixpath
import re
import shlex
import tomllib
import urllib.request
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from ingest_common.settings import IngestSettings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "deploy" / "docker" / "Dockerfile"
TERRAFORM = ROOT / "deploy" / "terraform"
TOPOLOGY = ROOT / "libs" / "common" / "src" / "ingest_common" / "topology.json"
COMPOSE_COLLECTOR = ROOT / "deploy" / "otel" / "collector.yaml"
ECS_COLLECTOR = ROOT / "deploy" / "otel" / "ecs-collector.yaml"

# A build's SERVICE argument names a workspace package: services/<name>/, or tools/cli.
PACKAGES = {
    **{
        p.name: p for p in sorted((ROOT / "services").iterdir()) if (p / "pyproject.toml").is_file()
    },
    "cli": ROOT / "tools" / "cli",
}
SERVICES = tuple(name for name in PACKAGES if name != "cli")
STAGE_OF = {**dict.fromkeys(SERVICES, "service"), "cli": "cli"}
ECS_DEFAULT_STOP_TIMEOUT = 30  # seconds, when a container definition sets no stopTimeout
FARGATE_MAX_STOP_TIMEOUT = 120


# --- the Dockerfile, parsed just enough --------------------------------------------------


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)


@cache
def dockerfile_stages(path: Path = DOCKERFILE) -> tuple[Stage, ...]:
    """FROM ... AS <name> stages with their (INSTRUCTION, arguments); `\\` lines joined."""
    lines, pending = [], ""
    for raw in path.read_text().splitlines():
        text = raw.strip()
        if not text or text.startswith("#"):  # comments and blank lines, even mid-instruction
            continue
        if text.endswith("\\"):
            pending += text[:-1] + " "
            continue
        lines.append(pending + text)
        pending = ""
    stages: list[Stage] = []
    for line in lines:
        keyword, _, args = line.partition(" ")
        if keyword.upper() == "FROM":
            words = [w for w in args.split() if not w.startswith("--")]
            named = len(words) == 3 and words[1].lower() == "as"
            stages.append(Stage(words[2] if named else str(len(stages)), words[0]))
        elif stages:  # global ARGs before the first FROM only parameterise FROM lines
            stages[-1].instructions.append((keyword.upper(), args.strip()))
    return tuple(stages)


def stage_chain(target: str | None) -> list[Stage]:
    """The stages an image built for `target` (default: the last one) consists of, base first."""
    stages = dockerfile_stages()
    by_name = {stage.name: stage for stage in stages}
    stage = by_name[target] if target else stages[-1]
    chain = [stage]
    while stage.base in by_name:
        stage = by_name[stage.base]
        chain.insert(0, stage)
    return chain


def instructions(chain: list[Stage], keyword: str) -> list[str]:
    return [args for stage in chain for kw, args in stage.instructions if kw == keyword]


def image_environment(chain: list[Stage]) -> dict[str, str]:
    env: dict[str, str] = {}
    for args in instructions(chain, "ENV"):
        words = shlex.split(args)
        if "=" not in words[0]:  # legacy `ENV KEY value with spaces`
            env[words[0]] = args.split(None, 1)[1]
            continue
        for word in words:
            key, _, value = word.partition("=")
            env[key] = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: env.get(m[1] or m[2], ""), value)
    return env


def build_arg(chain: list[Stage], name: str, args: dict[str, str]) -> str | None:
    """A build argument's value: given with --build-arg, else the ARG's default."""
    if name in args:
        return args[name]
    value = None
    for declared in instructions(chain, "ARG"):
        key, has_default, default = declared.partition("=")
        if key == name and has_default:
            value = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m[1], ""), default)
    return value


def healthcheck_argv(args: str) -> list[str] | None:
    """The command of `HEALTHCHECK [--option=value ...] CMD ...` (None for NONE)."""
    while args.startswith("--"):
        args = args.split(None, 1)[1]
    keyword, _, command = args.partition(" ")
    if keyword.upper() == "NONE":
        return None
    assert keyword.upper() == "CMD", f"unexpected HEALTHCHECK {args!r}"
    command = command.strip()
    if command.startswith("["):
        argv = json.loads(command)
        assert isinstance(argv, list)
        return [str(word) for word in argv]
    return ["/bin/sh", "-c", command]


def dockerignore_rules(dockerfile: Path) -> list[tuple[bool, re.Pattern[str]]]:
    """(re-include?, pattern) per line of the context's .dockerignore (BuildKit prefers
    <Dockerfile>.dockerignore next to the Dockerfile)."""
    path = dockerfile.with_name(dockerfile.name + ".dockerignore")
    if not path.exists():
        path = ROOT / ".dockerignore"
    rules = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = posixpath.normpath(line.removeprefix("!").strip().strip("/"))
        regex = ""
        for token in re.findall(r"\*\*/|\*\*|\*|\?|[^*?]", pattern):
            regex += {"**/": "(?:.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}.get(
                token, re.escape(token)
            )
        rules.append((negate, re.compile(regex)))
    return rules


def dockerignored(relative: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides."""
    parts = relative.split("/")
    paths = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    excluded = False
    for negate, pattern in rules:
        if any(pattern.fullmatch(p) for p in paths):
            excluded = not negate
    return excluded


# --- docker-compose.yml ------------------------------------------------------------------


@cache
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())  # PyYAML resolves anchors and `<<` merge keys
    assert isinstance(data, dict), "docker-compose.yml is not a mapping"
    assert isinstance(data.get("services"), dict), "docker-compose.yml has no services"
    return data


def interpolate(value: object) -> str:
    """Compose's ${VAR:-default} / ${VAR-default} / $VAR, with nothing set on the host."""
    return re.sub(
        r"\$\$|\$\{\w+(?::?-([^}]*))?\}|\$\w+",
        lambda m: "$" if m[0] == "$$" else m[1] or "",
        str(value),
    )


def compose_environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, None) for item in env)
    # A name without a value passes the host's through: unset here.
    return {str(k): interpolate(v) for k, v in env.items() if v is not None}


@dataclass(frozen=True)
class Build:
    service: str
    context: Path
    dockerfile: Path
    target: str | None
    args: dict[str, str]


def compose_builds() -> dict[str, Build]:
    builds = {}
    for name, service in compose()["services"].items():
        spec = service.get("build")
        if spec is None:
            continue
        if isinstance(spec, str):
            spec = {"context": spec}
        args = spec.get("args") or {}
        if isinstance(args, list):
            args = dict(item.split("=", 1) for item in args)
        context = (ROOT / interpolate(spec.get("context", "."))).resolve()
        builds[name] = Build(
            service=name,
            context=context,
            dockerfile=(context / interpolate(spec.get("dockerfile", "Dockerfile"))).resolve(),
            target=spec.get("target"),
            args={str(k): interpolate(v) for k, v in args.items()},
        )
    return builds


def compose_service_for(package: str) -> tuple[str, dict[str, Any], Build]:
    """The compose service that runs `package`'s image."""
    found = [
        (name, compose()["services"][name], build)
        for name, build in compose_builds().items()
        if build.args.get("SERVICE") == package
    ]
    assert len(found) == 1, f"docker-compose.yml: {len(found)} services build SERVICE={package}"
    return found[0]


# --- settings ----------------------------------------------------------------------------


def settings_class(package: str) -> type[IngestSettings]:
    """The one IngestSettings subclass of ingest_<package>.settings."""
    module = importlib.import_module(f"ingest_{package}.settings")
    classes = [
        c
        for c in vars(module).values()
        if isinstance(c, type) and issubclass(c, IngestSettings) and c.__module__ == module.__name__
    ]
    assert len(classes) == 1, f"{module.__name__} defines {len(classes)} settings classes"
    return classes[0]


def environment_names(cls: type[IngestSettings]) -> set[str]:
    """Every environment variable the settings class reads (upper case)."""
    return {name.upper() for field in cls.model_fields for name in cls.environment_names(field)}


def use_environment(mp: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    """Make `env` the whole process environment (inside a monkeypatch context)."""
    for key in list(os.environ):
        mp.delenv(key)
    for key, value in env.items():
        mp.setenv(key, value)


def container_settings(
    cls: type[IngestSettings], env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> IngestSettings:
    with monkeypatch.context() as mp:
        use_environment(mp, env)
        return cls()


class _Probed(Exception):
    pass


def probed_port(argv: list[str], env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> int:
    """Run a `python -c` health check with `env` and urlopen stubbed: the port it requests."""
    form = f"health check {argv} is not `python -c '...'`: teach test_deploy.py its form"
    assert len(argv) == 3, form
    assert argv[0] in ("python", "python3"), form
    assert argv[1] == "-c", form
    urls: list[str] = []

    def urlopen(url: str | urllib.request.Request, *args: object, **kwargs: object) -> None:
        urls.append(url if isinstance(url, str) else url.full_url)
        raise _Probed

    with monkeypatch.context() as mp:
        use_environment(mp, env)
        mp.setattr(urllib.request, "urlopen", urlopen)
        with contextlib.suppress(_Probed):
            exec(argv[2], {"__name__": "healthcheck"})
    assert len(urls) == 1, f"health check {argv} made {len(urls)} urllib requests, not 1"
    url = urlsplit(urls[0])
    assert url.hostname in ("127.0.0.1", "localhost"), f"health check probes {urls[0]}"
    return url.port or 80


# --- terraform ---------------------------------------------------------------------------


def terraform_text(name: str) -> str:
    return (TERRAFORM / name).read_text()


def terraform_service_environment() -> dict[str, str]:
    """The INGEST_* variables services.tf gives every service with a literal value."""
    return dict(
        re.findall(r"\b(INGEST_[A-Z0-9_]+)\s*=\s*\"([^\"$]*)\"", terraform_text("services.tf"))
    )


def terraform_health_command() -> list[str]:
    match = re.search(
        r"health_command\s*=\s*\[((?:\s*\"(?:[^\"\\]|\\.)*\"\s*,?)*)\s*\]", terraform_text("ecs.tf")
    )
    assert match, 'ecs.tf: no `health_command = ["CMD", ...]` list of strings'
    return [json.loads(s) for s in re.findall(r"\"(?:[^\"\\]|\\.)*\"", match[1])]


def parse_duration(text: object) -> float:
    """Compose durations: 90s, 1m30s, 1.5m, 500ms (a bare number is seconds)."""
    if isinstance(text, int | float):
        return float(text)
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", str(text))
    assert "".join(n + u for n, u in parts) == str(text), f"bad duration {text!r}"
    assert parts, f"bad duration {text!r}"
    return sum(float(n) * units[u] for n, u in parts)


# --- 1. compose builds the right images ---------------------------------------------------


def test_compose_builds_every_ingest_service_from_the_dockerfile() -> None:
    builds = compose_builds()
    expected = {*SERVICES, "bootstrap"}
    assert expected <= builds.keys(), (
        f"docker-compose.yml builds no image for {expected - builds.keys()}"
    )
    stages = {stage.name for stage in dockerfile_stages()}
    for name, build in builds.items():
        assert build.context == ROOT, (
            f"compose {name}: build context {build.context}, not the repo root"
        )
        assert build.dockerfile == DOCKERFILE, (
            f"compose {name}: builds {build.dockerfile}, not {DOCKERFILE}"
        )
        package = build.args.get("SERVICE")
        assert package in PACKAGES, (
            f"compose {name}: build arg SERVICE={package!r} is no package (one of {sorted(PACKAGES)})"
        )
        target = build.target or dockerfile_stages()[-1].name
        assert target in stages, (
            f"compose {name}: target {target!r} is no Dockerfile stage {stages}"
        )
        assert target == STAGE_OF[package], (
            f"compose {name}: SERVICE={package} must build target {STAGE_OF[package]!r}, not {target!r}"
        )
    built = {build.args.get("SERVICE") for build in builds.values() if build.target != "cli"}
    assert set(SERVICES) <= built, (
        f"docker-compose.yml runs no container of {set(SERVICES) - built}"
    )


def documented_builds() -> list[tuple[str, dict[str, str], str | None]]:
    """The `docker build` commands written in the Dockerfile's header and deploy/README.md."""
    found = []
    for path in (DOCKERFILE, ROOT / "deploy" / "README.md"):
        text = re.sub(r"\\\n[#\s]*", " ", path.read_text())  # join `\` continuations
        for line in re.findall(r"docker build [^\n]*", text):
            args = dict(re.findall(r"--build-arg (\w+)=(\S+)", line))
            target = re.search(r"--target (\S+)", line)
            found.append((f"{path.relative_to(ROOT)}: {line}", args, target and target[1]))
    return found


def test_every_image_build_runs_a_console_script_of_its_package() -> None:
    """The runtime stage links /app/.venv/bin/$COMMAND (default ingest-$SERVICE) as the
    entry point and fails the build when the package has no such console script."""
    builds = [(f"compose {b.service}", b.args, b.target) for b in compose_builds().values()]
    builds += documented_builds()
    assert len(builds) > len(compose_builds()), "no `docker build` command documented"
    for where, args, target in builds:
        package = args.get("SERVICE", "")
        assert package in PACKAGES, f"{where}: SERVICE={package!r} is no package"
        assert (target or dockerfile_stages()[-1].name) == STAGE_OF[package], (
            f"{where}: SERVICE={package} needs --target {STAGE_OF[package]}"
        )
        command = build_arg(stage_chain(target), "COMMAND", args)
        pyproject = tomllib.loads((PACKAGES[package] / "pyproject.toml").read_text())
        scripts = pyproject["project"].get("scripts", {})
        assert command in scripts, (
            f"{where}: the entry point would be {command!r}, but {package}'s console scripts"
            f" are {sorted(scripts)} (pass --build-arg COMMAND=...)"
        )


# --- 2. each service listens where its health check probes ---------------------------------


@pytest.mark.parametrize("package", SERVICES)
def test_compose_service_listens_where_its_healthcheck_probes(
    package: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    name, service, build = compose_service_for(package)
    chain = stage_chain(build.target)
    image_env = image_environment(chain)
    env = image_env | compose_environment(service)
    settings = container_settings(settings_class(package), env, monkeypatch)

    override = (service.get("healthcheck") or {}).get("test")
    if override is not None:
        assert isinstance(override, list), f"compose {name}: healthcheck test {override!r}"
        assert override[0] == "CMD", f"compose {name}: healthcheck test {override} is not CMD"
        argv: list[str] | None = [str(word) for word in override[1:]]
    else:
        checks = instructions(chain, "HEALTHCHECK")
        assert checks, f"compose {name}: the image (target {build.target}) has no HEALTHCHECK"
        argv = healthcheck_argv(checks[-1])
    assert argv is not None, f"compose {name}: HEALTHCHECK NONE"
    port = probed_port(argv, env, monkeypatch)
    assert settings.health_port == port, (
        f"compose {name}: {type(settings).__name__}.health_port is {settings.health_port} in the"
        f" container, but its health check probes port {port}: set INGEST_HEALTH_PORT"
        f" (image ENV or compose environment) so both agree"
    )

    exposed = {int(p.split("/")[0]) for args in instructions(chain, "EXPOSE") for p in args.split()}
    image_port = container_settings(settings_class(package), image_env, monkeypatch).health_port
    assert not exposed or image_port in exposed, (
        f"image of {package}: listens on {image_port} by default but EXPOSEs {sorted(exposed)}"
    )


@pytest.mark.parametrize("package", SERVICES)
def test_ecs_service_listens_where_its_health_check_probes(
    package: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = image_environment(stage_chain("service")) | terraform_service_environment()
    settings = container_settings(settings_class(package), env, monkeypatch)
    command = terraform_health_command()
    assert command[0] == "CMD", f"ecs.tf health_command {command}"
    port = probed_port(command[1:], env, monkeypatch)
    assert settings.health_port == port, (
        f"ECS {package}: health_port is {settings.health_port} with the task's environment, but"
        f" ecs.tf's health_command probes port {port}"
    )


# --- 3. no INGEST_* variable that no settings class reads -------------------------------


def test_compose_ingest_variables_are_settings_of_their_service() -> None:
    unknown = []
    for name, build in compose_builds().items():
        cls = settings_class(build.args["SERVICE"])
        known = environment_names(cls)
        service = compose()["services"][name]
        unknown += [
            f"compose {name}: {key} ({cls.__name__} has no such setting)"
            for key in compose_environment(service)
            if key.upper().startswith("INGEST_") and key.upper() not in known
        ]
    assert not unknown, "dead INGEST_* variables:\n" + "\n".join(unknown)


def test_terraform_ingest_variables_are_settings() -> None:
    """Every INGEST_NAME written in the .tf files (set or documented) is read by a settings
    class: the service's when the line is conditional on `name == "<service>"`, else any."""
    known = {package: environment_names(settings_class(package)) for package in PACKAGES}
    anywhere = set().union(*known.values())
    unknown = []
    seen = 0
    for path in sorted(TERRAFORM.glob("*.tf")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            only = re.search(r'name\s*==\s*"(\w+)"', line)
            for variable in re.findall(r"\bINGEST_[A-Z0-9_]*[A-Z0-9]\b", line):
                seen += 1
                names = known.get(only[1], set()) if only else anywhere
                if variable not in names:
                    unknown.append(f"{path.name}:{number}: {variable}")
    assert seen, "no INGEST_* variable found in deploy/terraform: is the regex stale?"
    assert not unknown, "INGEST_* variables no settings class reads:\n" + "\n".join(unknown)


# --- 4. SIGKILL never cuts a drain -------------------------------------------------------


@pytest.mark.parametrize("package", SERVICES)
def test_compose_stop_grace_period_exceeds_drain_timeout(
    package: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    name, service, build = compose_service_for(package)
    env = image_environment(stage_chain(build.target)) | compose_environment(service)
    drain = container_settings(settings_class(package), env, monkeypatch).drain_timeout
    grace = parse_duration(service.get("stop_grace_period", "10s"))  # compose's default
    assert grace > drain, (
        f"compose {name}: stop_grace_period {grace:g} s <= drain_timeout {drain:g} s:"
        " SIGKILL would cut the drain"
    )


@pytest.mark.parametrize("package", SERVICES)
def test_ecs_stop_timeout_exceeds_drain_timeout(
    package: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = image_environment(stage_chain("service")) | terraform_service_environment()
    drain = container_settings(settings_class(package), env, monkeypatch).drain_timeout
    timeouts = [int(t) for t in re.findall(r"\bstopTimeout\s*=\s*(\d+)", terraform_text("ecs.tf"))]
    for timeout in timeouts or [ECS_DEFAULT_STOP_TIMEOUT]:
        assert drain < timeout <= FARGATE_MAX_STOP_TIMEOUT, (
            f"ecs.tf: stopTimeout {timeout} s must exceed {package}'s drain_timeout {drain:g} s"
            f" and be at most Fargate's {FARGATE_MAX_STOP_TIMEOUT} s"
        )


# --- 5. what the Dockerfile copies is in the build context --------------------------------


def test_dockerfile_copies_only_what_the_build_context_holds() -> None:
    rules = dockerignore_rules(DOCKERFILE)
    problems = []
    copies = 0
    for stage in dockerfile_stages():
        for keyword, args in stage.instructions:
            if keyword not in ("COPY", "ADD"):
                continue
            words = json.loads(args) if args.startswith("[") else shlex.split(args)
            if any(w.startswith("--from") for w in words):
                continue
            sources = [w for w in words if not w.startswith("--")][:-1]
            for source in sources:
                copies += 1
                relative = posixpath.normpath(source.lstrip("/"))  # context-relative
                matches = sorted(ROOT.glob(relative)) if relative != "." else [ROOT]
                if relative.startswith("..") or not matches:
                    problems.append(f"{keyword} {source}: no such path in the repository")
                    continue
                for path in matches:
                    rel = path.relative_to(ROOT).as_posix()
                    if dockerignored(rel, rules):
                        problems.append(f"{keyword} {source}: .dockerignore excludes {rel}")
                    elif path.is_dir() and not any(
                        f.is_file() and not dockerignored(f.relative_to(ROOT).as_posix(), rules)
                        for f in path.rglob("*")
                    ):
                        problems.append(f"{keyword} {source}: .dockerignore excludes all of {rel}")
    assert copies, "the Dockerfile copies nothing from the context: is the parser stale?"
    assert not problems, "Dockerfile COPY sources missing from the build context:\n" + "\n".join(
        problems
    )


# --- 6. the task roles name what the topology declares and the code does -----------------


def hcl_block(text: str, opening: str) -> str:
    """The text between `opening`'s `{` and its matching `}` (no braces in strings here)."""
    start = text.index(opening) + len(opening)
    depth = 1
    for end in range(start, len(text)):
        depth += {"{": 1, "}": -1}.get(text[end], 0)
        if depth == 0:
            return text[start:end]
    raise AssertionError(f"unbalanced braces after {opening!r}")


def hcl_strings(text: str) -> list[str]:
    return [json.loads(s) for s in re.findall(r"\"(?:[^\"\\]|\\.)*\"", text)]


def terraform_services() -> dict[str, dict[str, Any]]:
    """services.tf's `services`: per service its queue (None: it consumes none), the role
    lists (sends, reads, lists, topics, buses), its S3 grants as (bucket, keys, actions),
    and what service_grants derives: `consumes` (queue + also_consumes) and `queues`
    (consumes + sends)."""
    block = hcl_block(terraform_text("services.tf"), "services = {")
    services: dict[str, dict[str, Any]] = {}
    for name in re.findall(r"^    (\w+) = \{", block, re.M):
        body = hcl_block(block, f"    {name} = {{")
        queue = re.search(r'\bqueue\s*=\s*(?:"(\w+)"|(null))\s*$', body, re.M)
        assert queue, f'services.tf: {name} has no `queue = "<role>"` (or null)'
        entry: dict[str, Any] = {"queue": queue[1]}
        for field_name in ("also_consumes", "sends", "reads", "lists", "topics", "buses"):
            found = re.search(rf"\b{field_name}\s*=\s*\[([^\]]*)\]", body)
            assert found, f"services.tf: {name} has no {field_name} list"
            entry[field_name] = hcl_strings(found[1])
        entry["consumes"] = [entry["queue"], *entry["also_consumes"]] if entry["queue"] else []
        entry["queues"] = list(dict.fromkeys(entry["consumes"] + entry["sends"]))
        entry["s3"] = [
            (bucket, keys, hcl_strings(actions))
            for bucket, keys, actions in re.findall(
                r'\{\s*bucket\s*=\s*"(\w+)",\s*keys\s*=\s*"([^"]*)",\s*actions\s*=\s*\[([^\]]*)\]',
                body,
            )
        ]
        services[name] = entry
    return services


def topology_file() -> dict[str, Any]:
    data = json.loads(TOPOLOGY.read_text())
    assert isinstance(data, dict)
    return data


def test_task_roles_name_only_declared_queues_and_buckets() -> None:
    topology = topology_file()
    queues, buckets = set(topology["queues"]), set(topology["buckets"])
    topics, buses = set(topology.get("topics", {})), set(topology.get("buses", {}))
    services = terraform_services()
    assert set(services) == set(SERVICES), f"services.tf grants {sorted(services)}"
    for name, svc in services.items():
        assert svc["queue"] is None or svc["queue"] in queues, (
            f"services.tf: {name} consumes unknown {svc['queue']}"
        )
        assert svc["queue"] is not None or not svc["also_consumes"], (
            f"services.tf: {name} has no queue but also_consumes {svc['also_consumes']}"
        )
        for field_name in ("also_consumes", "sends", "reads"):
            unknown = set(svc[field_name]) - queues
            assert not unknown, f"services.tf: {name}.{field_name} names no queue: {unknown}"
        unknown = set(svc["lists"]) - buckets
        assert not unknown, f"services.tf: {name}.lists names no bucket: {unknown}"
        unknown = set(svc["topics"]) - topics
        assert not unknown, f"services.tf: {name}.topics names no topic: {unknown}"
        unknown = set(svc["buses"]) - buses
        assert not unknown, f"services.tf: {name}.buses names no bus: {unknown}"
        for bucket, keys, actions in svc["s3"]:
            assert bucket in buckets, f"services.tf: {name} grants on unknown bucket {bucket}"
            assert keys, f"services.tf: {name}: an object grant needs keys (ListBucket: lists)"
            assert all(a.startswith("s3:") and a != "s3:ListBucket" for a in actions), actions


def queues_consumed_in_code(package: str) -> list[str]:
    """The topology's queue roles that `ingest_<package>.main` consumes: its
    `Consumes(settings.<queue setting>, ...)` of runtime.service.run_service."""
    source = (PACKAGES[package] / "src" / f"ingest_{package}" / "main.py").read_text()
    role_of = {q["setting"]: role for role, q in topology_file()["queues"].items()}
    settings = re.findall(r"Consumes\(\s*settings\.(\w+)", source)
    assert all(s in role_of for s in settings), f"{package} consumes {settings}"
    return [role_of[s] for s in settings]


def test_each_service_consumes_in_terraform_what_its_code_consumes() -> None:
    """services.tf's queue + also_consumes are the queues main.py hands run_service; a
    service that consumes none (the api) has `queue = null` and no consumer grants."""
    for name, svc in terraform_services().items():
        in_code = queues_consumed_in_code(name)
        assert sorted(svc["consumes"]) == sorted(in_code), (
            f"services.tf: {name} consumes {svc['consumes']}, its main.py {in_code}"
        )
        if in_code:
            assert svc["queue"] == in_code[0], f"{name}: autoscaling follows {svc['queue']}"
    assert terraform_services()["api"]["queue"] is None
    consumers = re.search(r"^\s*consumers\s*=\s*(.+)$", terraform_text("services.tf"), re.M)
    assert consumers
    assert consumers[1] == "{ for name, svc in local.services : name => svc if svc.queue != null }"


def test_every_consumer_may_send_to_its_own_queue_and_dead_letter_queue() -> None:
    """An outage hands a message back by sending it again; invalid ones go to the DLQ."""
    code = terraform_code(TERRAFORM / "services.tf")
    grants = hcl_block(code, "service_grants = {")
    derived = "svc.queue == null ? [] : concat([svc.queue], svc.also_consumes)"
    assert f"consumes = {derived}" in grants, "services.tf: consumes is not queue + also_consumes"
    assert f"queues   = distinct(concat({derived}, svc.sends))" in grants
    policies = hcl_block(code, "task_policies = {")
    assert "for name, svc in local.service_grants : name => jsonencode({" in policies
    statement = re.search(r'Sid\s*=\s*"Send"(.*?)\}\s*if length', policies, re.S)
    assert statement, "services.tf: no Send statement"
    assert "[for role in svc.consumes : local.queue_arns[role]]" in statement[1], (
        "consumers cannot re-send"
    )
    assert "[for role in svc.consumes : local.dead_letter_arns[role]]" in statement[1], (
        "no send to the DLQ"
    )
    assert "[for role in svc.sends : local.queue_arns[role]]" in statement[1]


def test_the_batcher_may_delete_what_the_garbage_sweep_deletes() -> None:
    """The batcher hosts the sweep (ingest_common.garbage): what it deletes and lists."""
    from ingest_common.garbage import RENDITIONS_ROOT

    batcher = terraform_services()["batcher"]
    deletes = {(b, k) for b, k, actions in batcher["s3"] if "s3:DeleteObject" in actions}
    assert deletes == {
        ("previews", RENDITIONS_ROOT + "*"),
        ("previews", "previews/families/*"),
        ("uploads", "originals/*"),
    }
    assert set(batcher["lists"]) == {"uploads", "previews"}
    tagging = {k for b, k, actions in batcher["s3"] if "s3:PutObjectTagging" in actions}
    assert tagging == {"uploads/*"}


# --- 7. SVG text has fonts in the runtime image -----------------------------------------


# The wheel's librsvg draws <text> with whatever its fontconfig finds; python:*-slim has no
# fonts and no /etc/fonts. fontconfig-config brings fonts.conf and the generic-family aliases.
RUNTIME_FONT_PACKAGES = {"fontconfig-config", "fonts-dejavu-core", "fonts-liberation2"}


def apt_installs(command: str) -> list[set[str]]:
    """The packages of each `apt-get install` in a RUN command (options and pins dropped)."""
    installs = []
    for part in re.split(r"&&|;|\|\|", command):
        words = shlex.split(part)
        if words[:2] == ["apt-get", "install"]:
            installs.append({w.split("=")[0] for w in words[2:] if not w.startswith("-")})
    return installs


@pytest.mark.parametrize("target", ["service", "cli"])
def test_runtime_image_installs_fonts_for_svg_text(target: str) -> None:
    runtime = next(stage for stage in dockerfile_stages() if stage.name == "runtime")
    assert runtime in stage_chain(target), f"target {target} is not built on the runtime stage"
    runs = [args for keyword, args in runtime.instructions if keyword == "RUN"]
    installed = set().union(*(p for run in runs for p in apt_installs(run)))
    assert installed >= RUNTIME_FONT_PACKAGES, (
        f"the runtime stage installs no {sorted(RUNTIME_FONT_PACKAGES - installed)}:"
        " SVG <text> would be drawn as empty boxes"
    )
    for run in runs:
        if not apt_installs(run):
            continue
        # One layer that updates, installs only what is named, and leaves no package lists.
        assert "apt-get update" in run, f"RUN {run!r}: apt-get install without apt-get update"
        assert "--no-install-recommends" in run, f"RUN {run!r}: installs recommended packages"
        assert re.search(r"rm -rf /var/lib/apt/lists/\*\s*$", run), (
            f"RUN {run!r}: does not end by removing /var/lib/apt/lists/*"
        )


# --- 8. the domain events: who publishes, where ------------------------------------------


def terraform_code(path: Path) -> str:
    """A .tf file without its full-line comments (their prose may hold braces or quotes)."""
    return re.sub(r"(?m)^\s*#.*$", "", path.read_text())


def terraform_resources(kind: str) -> dict[str, tuple[str, str]]:
    """name → (file, body) of every `resource "<kind>" "<name>" { ... }` in deploy/terraform."""
    found: dict[str, tuple[str, str]] = {}
    for path in sorted(TERRAFORM.glob("*.tf")):
        text = terraform_code(path)
        for match in re.finditer(rf'^resource\s+"{kind}"\s+"(\w+)"\s*\{{', text, re.M):
            assert match[1] not in found, f"resource {kind}.{match[1]} declared twice"
            found[match[1]] = (path.name, hcl_block(text, match[0]))
    return found


def attribute(body: str, name: str) -> str | None:
    """The expression of `name = ...` on one line of a block's body (None: not set)."""
    match = re.search(rf"^\s*{re.escape(name)}\s*=\s*(.+?)\s*$", body, re.M)
    return match[1] if match else None


def enclosing_block(text: str, position: int) -> tuple[int, int]:
    """(start, end) of the innermost `{ ... }` around `position`."""
    depth = 0
    for start in range(position, -1, -1):
        if text[start] == "}":
            depth += 1
        elif text[start] == "{":
            if depth == 0:
                break
            depth -= 1
    else:
        raise AssertionError(f"no block around offset {position}")
    depth = 0
    for end in range(start, len(text)):
        depth += {"{": 1, "}": -1}.get(text[end], 0)
        if depth == 0:
            return start, end
    raise AssertionError(f"unbalanced braces after offset {start}")


def publishing_services_in_code() -> set[str]:
    """The services whose code runs the outbox's publisher (ingest_common.outbox)."""
    return {
        package
        for package in SERVICES
        if any(
            "OutboxPublisher" in f.read_text() for f in (PACKAGES[package] / "src").rglob("*.py")
        )
    }


def test_terraform_declares_the_topics_buses_and_rules_of_the_topology() -> None:
    """events.tf creates one topic, bus and rule per entry of topology.json, by for_each
    over topology.tf's locals, which read the file; nothing names them in the .tf files."""
    topology = topology_file()
    assert topology.get("topics"), "topology.json declares no topic"
    assert topology.get("buses"), "topology.json declares no bus"
    locals_text = terraform_code(TERRAFORM / "topology.tf")
    for reads in ("local.topology.topics", "local.topology.buses", "b.rules", "r.pattern"):
        assert reads in locals_text, f"topology.tf does not read {reads}"
    expected = {
        "aws_sns_topic": ("topic", "local.topics"),
        "aws_cloudwatch_event_bus": ("bus", "local.buses"),
        "aws_cloudwatch_event_rule": ("rule", "local.bus_rules"),
        "aws_cloudwatch_event_target": ("log_group", "local.bus_rules"),
    }
    for kind, (name, source) in expected.items():
        resources = terraform_resources(kind)
        assert name in resources, f"deploy/terraform declares no {kind}.{name}"
        for_each = attribute(resources[name][1], "for_each") or ""
        assert for_each.startswith(("{ for role, b in " + source, source)), (
            f"{kind}.{name} iterates {for_each!r}, not {source} (topology.json)"
        )
    rule = terraform_resources("aws_cloudwatch_event_rule")["rule"][1]
    assert attribute(rule, "event_pattern") == "each.value.pattern"
    assert attribute(rule, "event_bus_name") == "local.buses[each.value.bus].name"
    # Every role written out in the .tf files ("alarms", "events") is one of the file's.
    roles = {
        "topic": set(topology["topics"]),
        "bus": set(topology["buses"]),
    }
    for path in sorted(TERRAFORM.glob("*.tf")):
        text = terraform_code(path)
        for role in re.findall(r'(?:aws_sns_topic\.topic|local\.topic_arns)\["(\w+)"\]', text):
            assert role in roles["topic"], f"{path.name}: topic role {role!r} not in topology.json"
        for role in re.findall(
            r'(?:aws_cloudwatch_event_bus\.bus|local\.bus_arns)\["(\w+)"\]', text
        ):
            assert role in roles["bus"], f"{path.name}: bus role {role!r} not in topology.json"
        # Names come from the variables (the settings' defaults) and the file, never literals.
        if path.name != "variables.tf":
            rules = [r for b in topology["buses"].values() for r in b.get("rules", {})]
            for literal in ("ingest-events", "ingest-alarms", *rules):
                assert f'"{literal}"' not in text, f"{path.name} hard-codes {literal!r}"


def test_only_the_service_that_runs_the_outbox_may_publish_events() -> None:
    """The batcher runs OutboxPublisher: its role alone gets the topic and bus the outbox
    publishes to (the settings outbox.py reads), nobody else gets any."""
    topology = topology_file()
    outbox = (ROOT / "libs" / "common" / "src" / "ingest_common" / "outbox.py").read_text()
    topics = {r for r, t in topology["topics"].items() if f"settings.{t['setting']}" in outbox}
    buses = {r for r, b in topology["buses"].items() if f"settings.{b['setting']}" in outbox}
    assert topics, "outbox.py publishes to no topic of topology.json"
    assert buses, "outbox.py publishes to no bus of topology.json"

    publishers = publishing_services_in_code()
    assert publishers == {"batcher"}, f"OutboxPublisher runs in {sorted(publishers)}"
    for name, svc in terraform_services().items():
        if name in publishers:
            assert set(svc["topics"]) == topics, f"services.tf: {name}.topics {svc['topics']}"
            assert set(svc["buses"]) == buses, f"services.tf: {name}.buses {svc['buses']}"
        else:
            may = svc["topics"] + svc["buses"]
            assert not may, f"services.tf: {name} publishes no event, yet may publish to {may}"


PUBLISH_ACTIONS = ("sns:Publish", "sns:ListTopics", "events:PutEvents")


def test_publish_actions_are_granted_only_through_the_services_topics_and_buses() -> None:
    """Each Allow of sns:Publish, sns:ListTopics or events:PutEvents is a statement of
    services.tf built from a service's `topics`/`buses` (so: the batcher's role only); any
    other mention is a Deny (the topic and bus policies that refuse everyone else)."""
    allowed: dict[str, list[str]] = {action: [] for action in PUBLISH_ACTIONS}
    for path in sorted(TERRAFORM.glob("*.tf")):
        text = terraform_code(path)
        for action in PUBLISH_ACTIONS:
            for match in re.finditer(re.escape(f'"{action}"'), text):
                start, end = enclosing_block(text, match.start())
                statement = text[start : end + 1]
                opening_line = text[text.rfind("\n", 0, start) + 1 : start]
                if re.search(r'Effect\s*=\s*"Deny"', statement):
                    spares = re.search(r"StringNotEquals = \{ \"aws:PrincipalArn\" =", statement)
                    assert spares, f"{path.name}: the Deny of {action} spares nobody"
                    continue
                assert path.name == "services.tf", f"{path.name} grants {action}"
                source = re.search(r"for \w+ in \[svc\.(topics|buses)\]", opening_line)
                assert source, f"services.tf grants {action} outside a svc.topics/buses statement"
                allowed[action].append(source[1])
                if action == "sns:Publish":
                    assert "local.topic_arns[role]" in statement, "sns:Publish on other topics"
                if action == "events:PutEvents":
                    assert "local.bus_arns[role]" in statement, "events:PutEvents on other buses"
    assert allowed == {
        "sns:Publish": ["topics"],
        "sns:ListTopics": ["topics"],
        "events:PutEvents": ["buses"],
    }, f"services.tf grants the publish actions as {allowed}"
    events = terraform_code(TERRAFORM / "events.tf")
    for field_name in ("topics", "buses"):
        assert f"contains(svc.{field_name}, role)" in events, (
            f"events.tf: the policies must spare the roles whose {field_name} name them"
        )


# --- 9. alarms reach a person; the dashboard shows every queue and service ----------------


def alarm_topic_role() -> str:
    roles = [r for r, t in topology_file()["topics"].items() if t["setting"] == "alarms_topic"]
    assert len(roles) == 1, f"topology.json: {len(roles)} topics with setting alarms_topic"
    return str(roles[0])


def test_every_alarm_notifies_the_alarms_topic_or_scales() -> None:
    """An alarm either drives autoscaling (its action is a scaling policy) or tells a person:
    alarm_actions and ok_actions are the alarms topic of topology.json."""
    alarms_tf = terraform_code(TERRAFORM / "alarms.tf")
    actions = re.search(
        r"^\s*alarm_actions\s*=\s*\[aws_sns_topic\.topic\[\"(\w+)\"\]\.arn\]", alarms_tf, re.M
    )
    assert actions, "alarms.tf: local.alarm_actions is not [aws_sns_topic.topic[<role>].arn]"
    assert actions[1] == alarm_topic_role(), f"the alarms notify topic {actions[1]!r}"
    alarms = terraform_resources("aws_cloudwatch_metric_alarm")
    person = set()
    for name, (file, body) in alarms.items():
        alarm_actions = attribute(body, "alarm_actions")
        assert alarm_actions, f"{file}: alarm {name} has no alarm_actions: nobody hears it"
        if alarm_actions.startswith("[aws_appautoscaling_policy."):
            continue
        assert alarm_actions == "local.alarm_actions", f"{file}: {name} notifies {alarm_actions}"
        assert attribute(body, "ok_actions") == "local.alarm_actions", (
            f"{file}: {name} does not say when it recovers (ok_actions)"
        )
        person.add(name)
    assert {"dead_letters", "message_age", "error_rate"} <= person, f"person alarms: {person}"


def test_the_alarms_cover_every_queue_dead_letter_queue_and_service() -> None:
    alarms = terraform_resources("aws_cloudwatch_metric_alarm")
    expected = {
        "dead_letters": ("local.queues", "aws_sqs_queue.dead_letter[each.key].name"),
        "message_age": ("local.queues", "aws_sqs_queue.queue[each.key].name"),
    }
    for name, (for_each, queue) in expected.items():
        body = alarms[name][1]
        assert attribute(body, "for_each") == for_each, f"alarm {name}: not one per queue"
        assert attribute(body, "namespace") == '"AWS/SQS"'
        assert attribute(body, "dimensions") == f"{{ QueueName = {queue} }}", name
    assert attribute(alarms["message_age"][1], "metric_name") == '"ApproximateAgeOfOldestMessage"'
    error_rate = alarms["error_rate"][1]
    assert attribute(error_rate, "for_each") == "local.consumers", "no error rate per consumer"
    api = {name for name in alarms if name.startswith("api_")}
    assert api == {"api_5xx_rate", "api_response_time"}, f"the api's alarms: {api}"
    # The dimension service.name is the settings' service_name, which is the service's key.
    for package in SERVICES:
        default = settings_class(package).model_fields["service_name"].default
        assert default == package, f"{package} reports service.name {default!r}"


def consumer_outcomes() -> set[str]:
    """The `outcome` attribute values of ingest.messages: what _run_handler can return."""
    source = (
        ROOT / "libs" / "common" / "src" / "ingest_common" / "runtime" / "consumer.py"
    ).read_text()
    body = source[source.index("async def _run_handler") : source.index("def _parse")]
    outcomes = set(re.findall(r'return "(\w+)"', body))
    assert {"ok", "failed", "invalid"} <= outcomes, f"consumer outcomes {outcomes}: regex stale?"
    return outcomes


def exported_metrics() -> dict[str, set[str]]:
    """metrics.py's instruments → their attributes (its docstring's table)."""
    source = (
        ROOT / "libs" / "common" / "src" / "ingest_common" / "telemetry" / "metrics.py"
    ).read_text()
    names = set(re.findall(r'create_\w+\(\s*"([\w.]+)"', source))
    table = {
        name: {a.strip() for a in attributes.split(",") if a.strip() and a.strip() != "(none)"}
        for name, attributes in re.findall(r"^\| `([\w.]+)`[^|]*\|[^|]*\|([^|]*)\|", source, re.M)
    }
    assert names, "metrics.py creates no instrument: is the regex stale?"
    assert names == set(table), f"metrics.py: instruments {names}, documented {set(table)}"
    return table


def terraform_metric_uses() -> list[tuple[str, str, frozenset[str]]]:
    """(file, metric, dimension names) of every metric of var.metrics_namespace that the
    alarms and the dashboard read."""
    uses = []
    alarms = terraform_code(TERRAFORM / "alarms.tf")
    for block in re.finditer(r"metric \{", alarms):
        body = hcl_block(alarms[block.start() :], "metric {")
        if attribute(body, "namespace") != "var.metrics_namespace":
            continue
        metric = json.loads(attribute(body, "metric_name") or '""')
        dimensions = re.search(r"dimensions\s*=\s*\{([^}]*)\}", body)
        assert dimensions, f"alarms.tf: {metric} without dimensions"
        keys = re.findall(r'"?([\w.]+)"?\s*=', dimensions[1])
        uses.append(("alarms.tf", metric, frozenset(keys)))
    dashboard = terraform_code(TERRAFORM / "dashboard.tf")
    for match in re.finditer(r"\[var\.metrics_namespace,\s*\"([\w.]+)\",([^{\]]*)", dashboard):
        words = [w.strip() for w in match[2].split(",") if w.strip()]
        uses.append(("dashboard.tf", match[1], frozenset(json.loads(w) for w in words[0::2])))
    assert any(f == "alarms.tf" for f, _, _ in uses), "alarms.tf reads no metric of the services"
    assert any(f == "dashboard.tf" for f, _, _ in uses), (
        "dashboard.tf shows no metric of the services"
    )
    return uses


def emf_declarations() -> list[tuple[list[str], list[frozenset[str]]]]:
    """(metric name selectors, dimension sets) of the ECS collector's awsemf exporter."""
    awsemf = collector_config(ECS_COLLECTOR)["exporters"]["awsemf"]
    return [
        (d["metric_name_selectors"], [frozenset(dims) for dims in d["dimensions"]])
        for d in awsemf["metric_declarations"]
    ]


def test_alarms_and_dashboard_read_metrics_the_collector_sends_to_cloudwatch() -> None:
    """Each metric of the services that an alarm or the dashboard reads is one metrics.py
    exports, with outcomes the consumer reports, and with a dimension set that the
    collector's awsemf declares for it: otherwise CloudWatch never has it."""
    metrics = exported_metrics()
    declarations = emf_declarations()
    for file, metric, dimensions in terraform_metric_uses():
        assert metric in metrics, f"{file}: {metric} is no metric of metrics.py {sorted(metrics)}"
        declared = [
            dims
            for selectors, sets in declarations
            if any(re.search(s, metric) for s in selectors)
            for dims in sets
        ]
        assert dimensions in declared, (
            f"{file}: {metric} by {sorted(dimensions)}, but ecs-collector.yaml declares only"
            f" {[sorted(d) for d in declared]}"
        )
    alarms = terraform_code(TERRAFORM / "alarms.tf")
    error_outcomes = set(re.findall(r'"(\w+)"', attribute(alarms, "error_outcomes") or ""))
    assert error_outcomes, "alarms.tf: no error_outcomes"
    assert "ok" not in error_outcomes, "an ok message is no error"
    dashboard = terraform_code(TERRAFORM / "dashboard.tf")
    shown = re.search(r"concat\(local\.error_outcomes, \[([^\]]*)\]\)", dashboard)
    assert shown, "dashboard.tf: no widget of the outcomes"
    unknown = (error_outcomes | set(re.findall(r'"(\w+)"', shown[1]))) - consumer_outcomes()
    assert not unknown, f"outcomes the consumer never reports: {unknown}"


def test_every_metric_of_the_services_reaches_cloudwatch_with_its_own_attributes() -> None:
    """With metric_declarations awsemf drops what they do not select: each instrument is
    selected, by attributes it has (service.name is the resource's)."""
    metrics = exported_metrics()
    declarations = emf_declarations()
    for metric, attributes in metrics.items():
        sets = [
            d
            for selectors, dims in declarations
            if any(re.search(s, metric) for s in selectors)
            for d in dims
        ]
        assert sets, f"ecs-collector.yaml: awsemf drops {metric}"
        for dims in sets:
            assert "service.name" in dims, f"{metric} by {sorted(dims)}: which service?"
            unknown = dims - {"service.name"} - attributes
            assert not unknown, f"{metric} has no attribute {sorted(unknown)} (metrics.py)"


def test_the_dashboard_shows_every_queue_dead_letter_queue_and_service() -> None:
    dashboard = terraform_code(TERRAFORM / "dashboard.tf")
    assert terraform_resources("aws_cloudwatch_dashboard"), "no aws_cloudwatch_dashboard"
    for metric, name in (
        ("ApproximateNumberOfMessagesVisible", "q.name"),
        ("ApproximateAgeOfOldestMessage", "q.name"),
        ("ApproximateNumberOfMessagesVisible", "q.dead_letter_name"),
    ):
        pattern = rf'for role, q in local\.queues :\s*\["AWS/SQS", "{metric}", "QueueName", {re.escape(name)},'
        assert re.search(pattern, dashboard), f"dashboard.tf: no {metric} of every {name}"
    per_service = r"for name in keys\(local\.consumers\) :[^\]]*\[var\.metrics_namespace, \"{}\""
    for metric in ("ingest.messages", "ingest.message.duration"):
        assert re.search(per_service.format(re.escape(metric)), dashboard), (
            f"dashboard.tf: no {metric} of every service"
        )
    assert '"ingest.render.duration"' in dashboard, "dashboard.tf: no render time"
    person = {
        name
        for name, (_, body) in terraform_resources("aws_cloudwatch_metric_alarm").items()
        if attribute(body, "alarm_actions") == "local.alarm_actions"
    }
    shown = set(re.findall(r"aws_cloudwatch_metric_alarm\.(\w+)", dashboard))
    assert shown == person, f"the alarm widget shows {shown}, the alarms are {person}"


# --- 10. the OpenTelemetry collectors ---------------------------------------------------------


def collector_config(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict), f"{path.name} is not a mapping"
    return data


@pytest.mark.parametrize("path", [COMPOSE_COLLECTOR, ECS_COLLECTOR], ids=lambda p: p.name)
def test_collector_configs_define_what_their_traces_and_metrics_pipelines_use(path: Path) -> None:
    config = collector_config(path)
    pipelines = config["service"]["pipelines"]
    assert {"traces", "metrics"} <= set(pipelines), f"{path.name}: pipelines {sorted(pipelines)}"
    used: dict[str, set[str]] = {"receivers": set(), "processors": set(), "exporters": set()}
    for name, pipeline in pipelines.items():
        assert pipeline.get("receivers"), f"{path.name}: pipeline {name} receives nothing"
        assert pipeline.get("exporters"), f"{path.name}: pipeline {name} exports nothing"
        for kind, components in used.items():
            for component in pipeline.get(kind, []):
                assert component in (config.get(kind) or {}), (
                    f"{path.name}: pipeline {name} uses {kind[:-1]} {component!r}, not defined"
                )
                components.add(component)
    for kind, components in used.items():
        unused = set(config.get(kind) or {}) - components
        assert not unused, f"{path.name}: {kind} {sorted(unused)} defined but in no pipeline"
    for extension in config["service"].get("extensions", []):
        assert extension in config.get("extensions", {}), f"{path.name}: extension {extension}"
    assert "otlp" in pipelines["metrics"]["receivers"], f"{path.name}: metrics not from OTLP"


def test_compose_runs_its_collector_with_the_config_and_ports_the_services_use() -> None:
    service = compose()["services"]["otel-collector"]
    config_flag = next(a for a in service["command"] if a.startswith("--config="))
    mounts = {v.split(":")[1]: v.split(":")[0] for v in service["volumes"]}
    target = config_flag.removeprefix("--config=")
    assert (ROOT / mounts[target]).resolve() == COMPOSE_COLLECTOR, f"{target} is not collector.yaml"
    config = collector_config(COMPOSE_COLLECTOR)
    http = config["receivers"]["otlp"]["protocols"]["http"]["endpoint"]
    documented = re.findall(
        r"OTEL_EXPORTER_OTLP_ENDPOINT=http://otel-collector:(\d+)", COMPOSE.read_text()
    )
    assert documented, "docker-compose.yml documents no OTEL_EXPORTER_OTLP_ENDPOINT"
    for port in documented:
        assert http.endswith(f":{port}"), f"the services are told :{port}, it receives on {http}"
    prometheus = config["exporters"]["prometheus"]["endpoint"].rsplit(":", 1)[1]
    published = [str(p).rsplit(":", 1)[1] for p in service.get("ports", [])]
    assert prometheus in published, f"the metrics port {prometheus} is not published"
    jaeger = config["exporters"]["otlp/jaeger"]["endpoint"].split(":")[0]
    assert jaeger in compose()["services"], f"the traces go to {jaeger!r}, no compose service"


def collector_tf_map(name: str) -> dict[str, str]:
    """`name = { KEY = expression ... }` of collector.tf's locals."""
    body = hcl_block(terraform_code(TERRAFORM / "collector.tf"), f"{name} = {{")
    return dict(re.findall(r"^\s*(\w+)\s*=\s*(.+?)\s*$", body, re.M))


def test_every_task_runs_the_ecs_collector_beside_its_service() -> None:
    """One container definition (collector.tf) in every service's task definition, with
    deploy/otel/ecs-collector.yaml in AOT_CONFIG_CONTENT; the service sends to it."""
    collector_tf = terraform_code(TERRAFORM / "collector.tf")
    ref = re.search(r'file\("\$\{path\.module\}/([^"]+)"\)', collector_tf)
    assert ref, "collector.tf reads no file()"
    assert (TERRAFORM / ref[1]).resolve() == ECS_COLLECTOR, f"collector.tf reads {ref[1]}"
    environment = collector_tf_map("collector_environment")
    assert environment.get("AOT_CONFIG_CONTENT") == "local.collector_config_content"
    assert "for name in keys(local.services) : name =>" in collector_tf, "not one per service"
    image = re.search(
        r'variable "collector_image" \{[^}]*default\s*=\s*"([^"]+)"', terraform_text("variables.tf")
    )
    assert image, "variables.tf: collector_image has no default"
    assert image[1].startswith("public.ecr.aws/aws-observability/aws-otel-collector:"), image[1]

    task = terraform_resources("aws_ecs_task_definition")["service"][1]
    assert attribute(task, "for_each") == "local.services"
    assert re.search(r"\}, local\.collector_containers\[each\.key\]\]\)", task), (
        "ecs.tf: the service's task definition has no collector container"
    )
    assert re.search(
        r'dependsOn = \[\{ containerName = local\.collector_containers\[each\.key\]\.name, condition = "START" \}\]',
        task,
    )

    endpoint = re.search(r'collector_otlp_endpoint\s*=\s*"([^"]+)"', collector_tf)
    assert endpoint, "collector.tf: no collector_otlp_endpoint"
    assert (
        "OTEL_EXPORTER_OTLP_ENDPOINT                       = local.collector_otlp_endpoint"
        in terraform_text("services.tf")
    )
    url = urlsplit(endpoint[1])
    assert url.hostname in ("127.0.0.1", "localhost"), f"the collector is at {endpoint[1]}"

    config = collector_config(ECS_COLLECTOR)
    http = urlsplit("//" + config["receivers"]["otlp"]["protocols"]["http"]["endpoint"])
    assert http.port == url.port, (
        f"the services send to {url.port}, the collector hears {http.port}"
    )
    pipelines = config["service"]["pipelines"]
    assert "awsxray" in pipelines["traces"]["exporters"], "traces do not go to X-Ray"
    assert "awsemf" in pipelines["metrics"]["exporters"], "metrics do not go to CloudWatch"
    # Every ${env:NAME} of the file is in the collector's environment.
    wanted = set(re.findall(r"\$\{env:(\w+)\}", ECS_COLLECTOR.read_text()))
    assert wanted <= set(environment), f"the collector is not given {wanted - set(environment)}"
    awsemf = config["exporters"]["awsemf"]
    assert awsemf["namespace"] == "${env:METRICS_NAMESPACE}"
    assert environment["METRICS_NAMESPACE"] == "var.metrics_namespace"
    assert awsemf["log_group_name"] == "${env:METRICS_LOG_GROUP}"
    assert environment["METRICS_LOG_GROUP"] == "local.metrics_log_group"


def test_task_roles_may_send_traces_and_metrics_to_the_metrics_log_group_only() -> None:
    policy = terraform_resources("aws_iam_role_policy")["telemetry"][1]
    assert attribute(policy, "for_each") == "local.services", "not every task role"
    assert attribute(policy, "role") == "aws_iam_role.task[each.key].id"
    for action in (
        "xray:PutTraceSegments",
        "xray:PutTelemetryRecords",
        "logs:PutLogEvents",
        "logs:CreateLogStream",
    ):
        assert f'"{action}"' in policy, f"the collector may not {action}"
    logs = policy[policy.index('"logs:PutLogEvents"') :]
    resource = attribute(logs, "Resource") or ""
    assert "local.metrics_log_group_arn" in resource, f"the collector writes {resource}"
    assert '"*"' not in resource, f"the collector may write every log group: {resource}"
    group = terraform_resources("aws_cloudwatch_log_group")["metrics"][1]
    assert attribute(group, "name") == "local.metrics_log_group"


# --- 11. each task role is granted the AWS calls its code makes, and no more -----------------
#
# What a deployable calls, read from its source (ast, never imported):
#
# 1. Its code: every module of services/<svc>/src (for the CLI task: the subcommands it runs in
#    AWS, CLI_TASK_ROOTS), plus the workspace modules they import, transitively.
# 2. From those functions, the calls it makes: `f(...)` (a function, or a class: its dunder
#    methods) in module M reaches every f of M and of the modules M imports; `x.f(...)` every
#    method or function f of those modules (the objects are handed around: self.aws). An
#    over-approximation by name, bounded by the modules the deployable imports.
# 3. The AWS operations in the reached functions: `<x>.s3|sqs|sns|events.<operation>(...)` and
#    `<x>.<client>.get_paginator("<operation>")` (all of them go through ingest_common.aws.Aws's
#    clients), mapped to IAM actions: CamelCase(operation) under the client's prefix, except for
#    IAM_ACTIONS_OF (batch calls, heads, lists). A function that handles a missing object
#    (it names NoSuchKey) needs s3:ListBucket: without it S3 answers 403, not 404.
#
# What Terraform grants: services.tf's task_policies (per service: the statements whose
# svc.<field> guard is non-empty, their Action lists) and cli_task_policy, plus nothing else
# of the task roles but collector.tf's telemetry policy (the collector container's, not the
# code's: not compared).

# Attribute names of the clients in code (`aws.s3.get_object`) → their IAM prefix. `s3_objects`
# is Aws's own S3 PutObject client (ingest_common.s3_put), which names its method so, and a
# render worker's (ingest_common.s3_put_blocking), named alike; `s3_threads` is Aws's
# blocking one of those (`put_many`); `sns_publisher`, SNS's
# PublishBatch (ingest_common.aws_query), likewise. `sqs_messages` and `bus` are
# Aws's JSON-protocol clients (ingest_common.aws_json): `aws.bus.call("PutEvents", ...)`
# is read as the aiobotocore client's `put_events`.
AWS_CLIENTS = {
    "s3": "s3",
    "s3_objects": "s3",
    "s3_threads": "s3",
    "sqs": "sqs",
    "sqs_messages": "sqs",
    "sns": "sns",
    "sns_publisher": "sns",
    "events": "events",
    "bus": "events",
}
JSON_CLIENTS = frozenset({"sqs_messages", "bus"})  # Aws's `call("Operation", ...)` clients
IAM_ACTIONS_OF: dict[tuple[str, str], frozenset[str]] = {
    ("s3", "head_object"): frozenset({"s3:GetObject"}),
    ("s3", "list_objects_v2"): frozenset({"s3:ListBucket"}),
    ("s3", "delete_objects"): frozenset({"s3:DeleteObject"}),
    # garbage.tag_rejected_upload tags the one version (VersionId) in a versioned bucket.
    ("s3", "put_object_tagging"): frozenset({"s3:PutObjectTagging", "s3:PutObjectVersionTagging"}),
    ("sqs", "send_message_batch"): frozenset({"sqs:SendMessage"}),
    ("sqs", "delete_message_batch"): frozenset({"sqs:DeleteMessage"}),
    ("sqs", "change_message_visibility_batch"): frozenset({"sqs:ChangeMessageVisibility"}),
    ("sns", "publish_batch"): frozenset({"sns:Publish"}),
    ("sns_publisher", "publish_batch"): frozenset({"sns:Publish"}),  # aws_query.SnsPublisher
    # The S3 dependency probe counts any answer below 500 as S3 being there, 403 included
    # (runtime/dependencies.py): it needs no grant.
    ("s3", "head_bucket"): frozenset(),
    # A presigned POST form (the api's upload forms) is signed locally, and S3 checks the
    # upload against the signer's rights: the role that signs needs s3:PutObject on the key.
    ("s3", "generate_presigned_post"): frozenset({"s3:PutObject"}),
    # The session's credentials, which the processor hands to its render workers to sign
    # their PUTs (`put_object` there, counted as such): reading them calls no AWS API.
    ("s3_objects", "credentials"): frozenset(),
    # A render's renditions at once (s3_put_blocking.BlockingPutter.put_objects): PutObjects.
    ("s3_objects", "put_objects"): frozenset({"s3:PutObject"}),
    ("s3_threads", "put_objects"): frozenset({"s3:PutObject"}),  # Aws.put_many's
    ("s3_threads", "get_objects"): frozenset({"s3:GetObject"}),  # Aws.get_many's
}
MISSING_OBJECT_CODES = ("NoSuchKey",)  # naming it: the code relies on 404 for a missing key
# Granted although no code path of the deployable calls it, and why.
ALLOWED_UNUSED: dict[str, dict[str, str]] = {}
# The CLI task's subcommands besides migrate (services.tf cli_task): their modules, all of them.
CLI_TASK_ROOTS = ("ingest_cli.dlq", "ingest_cli.reconcile", "ingest_cli.backfill")
CLI_TASK_FUNCTIONS = ("ingest_cli.main.cmd_migrate", "ingest_cli.main.cmd_dlq")
SOURCE_ROOTS = [
    ROOT / "libs" / "common" / "src",
    *(path / "src" for path in PACKAGES.values()),
]


@dataclass
class Unit:
    """A function or method (nested functions included in it) of the workspace's code."""

    module: str
    qualname: str
    calls: set[str] = field(default_factory=set)  # f(...): names called
    method_calls: set[str] = field(default_factory=set)  # x.f(...): attribute names called
    operations: set[tuple[str, str]] = field(default_factory=set)  # (client, operation)
    missing_object: bool = False
    names: set[str] = field(default_factory=set)  # every name it reads (classes it may make)


@dataclass
class Module:
    name: str
    imports: set[str] = field(default_factory=set)  # workspace modules, also TYPE_CHECKING ones
    runtime_imports: set[str] = field(default_factory=set)  # without TYPE_CHECKING ones
    units: list[Unit] = field(default_factory=list)
    classes: set[str] = field(default_factory=set)
    defined: set[str] = field(default_factory=set)  # its top-level functions and classes
    bases: dict[str, set[str]] = field(default_factory=dict)  # class → the names of its bases
    module_level_names: set[str] = field(default_factory=set)  # read outside any function


def _module_names() -> dict[str, Path]:
    modules = {}
    for root in SOURCE_ROOTS:
        for path in root.rglob("*.py"):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join(parts)] = path
    return modules


def _client_call(call: ast.Call) -> tuple[str, str] | None:
    """(client, operation) of `<x>.<client>.<operation>(...)`, `<x>.<client>.get_paginator("op")`
    or `<x>.<json client>.call("Operation", ...)`."""
    func = call.func
    if not isinstance(func, ast.Attribute):
        return None
    if func.attr == "get_paginator":
        client = _client_of(func)
        if (
            client is not None
            and call.args
            and isinstance(call.args[0], ast.Constant)
            and isinstance(call.args[0].value, str)
        ):
            return (client, call.args[0].value)
        return None
    if func.attr == "call" and (client := _client_of(func)) in JSON_CLIENTS:
        operation = call.args[0] if call.args else None
        if isinstance(operation, ast.Constant) and isinstance(operation.value, str):
            snake = re.sub(r"(?<!^)(?=[A-Z])", "_", operation.value).lower()
            return (AWS_CLIENTS[client], snake)  # read as the aiobotocore client's call
        return None
    return _client_operation(func)


# What a client holds that is no AWS operation: botocore's, and our clients' endpoint and
# settings (handed to other calls as arguments).
CLIENT_DATA = frozenset({"meta", "can_paginate", "endpoint", "settings"})


def _client_operation(func: ast.Attribute) -> tuple[str, str] | None:
    """(client, operation) of `<x>.<client>.<operation>`, called or handed on to be called."""
    client = _client_of(func)
    if client is None or func.attr.startswith("_") or func.attr in CLIENT_DATA:
        return None
    return (client, func.attr)


def _client_of(func: ast.Attribute) -> str | None:
    """The client of `<x>.<client>.<attribute>`, if `<client>` names one."""
    if not isinstance(func.value, ast.Attribute) or func.value.attr not in AWS_CLIENTS:
        return None
    owner = func.value.value
    if isinstance(owner, ast.Attribute) and owner.attr == "meta":
        return None  # s3.meta.events: botocore's event hooks, not the EventBridge client
    return func.value.attr


# Calls that call one of their arguments (in a thread): the position of that argument.
HANDS_ON = {"submit": 0, "to_thread": 0, "run_in_executor": 1}


def _called_name(call: ast.Call) -> str:
    func = call.func
    return func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")


def _names_outside_functions(statement: ast.stmt) -> set[str]:
    """Names read by module-level code and class bodies (a registry of classes, say)."""
    if isinstance(statement, ast.FunctionDef | ast.AsyncFunctionDef):
        return set()
    if isinstance(statement, ast.ClassDef):
        return set().union(*(_names_outside_functions(item) for item in statement.body))
    return {inner.id for inner in ast.walk(statement) if isinstance(inner, ast.Name)}


def _type_checking_lines(tree: ast.Module) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                for inner in ast.walk(child):
                    if hasattr(inner, "lineno"):
                        lines.add(inner.lineno)
    return lines


def _unit(
    module: str, node: ast.FunctionDef | ast.AsyncFunctionDef, qualname: str, gone: set[str]
) -> Unit:
    """What one function calls: names, methods, AWS operations; whether it handles a missing
    object (names NoSuchKey, or a module constant `gone` that holds it)."""
    unit = Unit(module, qualname)
    names_404 = False
    for inner in ast.walk(node):
        if isinstance(inner, ast.Name):
            unit.names.add(inner.id)
        if isinstance(inner, ast.Constant) and inner.value in (404, "404"):
            names_404 = True
        if isinstance(inner, ast.Call):
            if (op := _client_call(inner)) is not None:
                unit.operations.add(op)
            if isinstance(inner.func, ast.Name):
                unit.calls.add(inner.func.id)
            elif isinstance(inner.func, ast.Attribute):
                unit.method_calls.add(inner.func.attr)
            # A function handed to a process or a thread runs too: `Process(target=f)`,
            # `threads.submit(self.s3_objects.put_object, ...)`, `asyncio.to_thread(f, ...)`.
            unit.calls.update(
                kw.value.id
                for kw in inner.keywords
                if kw.arg == "target" and isinstance(kw.value, ast.Name)
            )
            at = HANDS_ON.get(_called_name(inner))
            if at is not None and len(inner.args) > at:
                first = inner.args[at]
                if isinstance(first, ast.Name):
                    unit.calls.add(first.id)
                elif isinstance(first, ast.Attribute):
                    unit.method_calls.add(first.attr)
            # A client's method handed on to be called, to a thread or to a helper that calls
            # it there: `self._from_threads(self.s3_threads.put_objects, objects)`.
            for argument in inner.args:
                if isinstance(argument, ast.Attribute) and (op := _client_operation(argument)):
                    unit.operations.add(op)
        elif (isinstance(inner, ast.Constant) and inner.value in MISSING_OBJECT_CODES) or (
            isinstance(inner, ast.Name) and inner.id in gone
        ):
            unit.missing_object = True
    # A head or get of an object that tells a missing one by its 404 (not NoSuchKey's name).
    if names_404 and unit.operations & {("s3", "head_object"), ("s3", "get_object")}:
        unit.missing_object = True
    return unit


@cache
def workspace_modules() -> dict[str, Module]:
    names = _module_names()
    modules: dict[str, Module] = {}
    for name, path in names.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        module = Module(name)
        typing_only = _type_checking_lines(tree)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(
                        package.split(".")[: len(package.split(".")) - node.level + 1]
                        + ([base] if base else [])
                    )
                targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
            for target in targets:
                if target in names and target != name:
                    module.imports.add(target)
                    if isinstance(node, ast.stmt) and node.lineno not in typing_only:
                        module.runtime_imports.add(target)
        # Module-level names bound to something that names a missing-object code (_GONE = ...).
        gone_names = {
            t.id
            for node in tree.body
            if isinstance(node, ast.Assign)
            and any(code in ast.unparse(node.value) for code in MISSING_OBJECT_CODES)
            for t in node.targets
            if isinstance(t, ast.Name)
        }

        for node in tree.body:
            module.module_level_names |= _names_outside_functions(node)
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                module.defined.add(node.name)
                module.units.append(_unit(name, node, node.name, gone_names))
            elif isinstance(node, ast.ClassDef):
                module.classes.add(node.name)
                module.defined.add(node.name)
                module.bases[node.name] = {
                    base.id if isinstance(base, ast.Name) else base.attr
                    for base in (b.value if isinstance(b, ast.Subscript) else b for b in node.bases)
                    if isinstance(base, ast.Name | ast.Attribute)
                }
                for item in node.body:
                    if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef):
                        qualname = f"{node.name}.{item.name}"
                        module.units.append(_unit(name, item, qualname, gone_names))
        modules[name] = module
    return modules


def reachable_units(root_modules: list[str], root_functions: tuple[str, ...] = ()) -> list[Unit]:
    """The functions reached from every function of `root_modules` (and `root_functions`,
    module.qualname), following calls by name within each caller's module and its imports
    (a function of the caller's own module shadows an imported one of the same name), and
    method calls to the methods of the classes the reached code names (a class nothing
    reached names makes no object: its methods run only through a subclass, also named)."""
    modules = workspace_modules()
    closure, todo = set(), [*root_modules, *(f.rsplit(".", 1)[0] for f in root_functions)]
    while todo:
        name = todo.pop()
        if name not in closure:
            closure.add(name)
            todo.extend(modules[name].runtime_imports)
    by_name: dict[str, dict[str, list[Unit]]] = {}  # module → called name → units
    for name in closure:
        index: dict[str, list[Unit]] = {}
        for unit in modules[name].units:
            cls, _, method = unit.qualname.rpartition(".")
            index.setdefault(method, []).append(unit)
            if cls and method.startswith("__") and method.endswith("__"):
                index.setdefault(cls, []).append(unit)  # Foo(...), async with Foo(...)
        by_name[name] = index
    classes_named: dict[str, list[tuple[str, str]]] = {}  # class name → (module, class)
    for name in closure:
        for cls in modules[name].classes:
            classes_named.setdefault(cls, []).append((name, cls))

    live: set[tuple[str, str]] = set()  # (module, class) whose objects may exist
    waiting: dict[tuple[str, str], list[Unit]] = {}  # methods called before their class lived
    todo_units: list[Unit] = []

    def name_classes(names: set[str]) -> None:
        pending = [c for n in names for c in classes_named.get(n, [])]
        while pending:
            owner = pending.pop()
            if owner in live:
                continue
            live.add(owner)
            todo_units.extend(waiting.pop(owner, []))
            for base in modules[owner[0]].bases.get(owner[1], set()):
                pending.extend(classes_named.get(base, []))

    for name in closure:
        name_classes(modules[name].module_level_names)
    todo_units += [unit for name in root_modules for unit in modules[name].units] + [
        unit
        for qualified in root_functions
        for unit in modules[qualified.rsplit(".", 1)[0]].units
        if unit.qualname == qualified.rsplit(".", 1)[1]
    ]
    reached: dict[int, Unit] = {}
    while todo_units:
        unit = todo_units.pop()
        if id(unit) in reached:
            continue
        reached[id(unit)] = unit
        name_classes(unit.names)
        imported = [m for m in modules[unit.module].imports if m in closure]
        for called in unit.calls:
            own = called in modules[unit.module].defined
            for module_name in [unit.module] if own else [unit.module, *imported]:
                todo_units.extend(by_name.get(module_name, {}).get(called, []))
        # x.f(...): the object may come from anywhere (self.aws is an Aws the runtime hands
        # over), so every function f of the closure and every method f of a class named.
        for called in unit.method_calls:
            for module_name in closure:
                for target in by_name[module_name].get(called, []):
                    cls = target.qualname.rpartition(".")[0]
                    if cls and (module_name, cls) not in live:
                        waiting.setdefault((module_name, cls), []).append(target)
                    else:
                        todo_units.append(target)
    return list(reached.values())


def iam_actions(client: str, operation: str) -> frozenset[str]:
    if (client, operation) in IAM_ACTIONS_OF:
        return IAM_ACTIONS_OF[(client, operation)]
    return frozenset({f"{AWS_CLIENTS[client]}:{''.join(w.title() for w in operation.split('_'))}"})


def needed_actions(units: list[Unit]) -> dict[str, set[str]]:
    """IAM action → the functions that need it."""
    needed: dict[str, set[str]] = {}
    for unit in units:
        for client, operation in unit.operations:
            for action in iam_actions(client, operation):
                needed.setdefault(action, set()).add(f"{unit.module}.{unit.qualname}")
        if unit.missing_object:
            needed.setdefault("s3:ListBucket", set()).add(f"{unit.module}.{unit.qualname} (404)")
    return needed


def terraform_local_list(name: str) -> list[str]:
    found = re.search(
        rf"^\s*{name}\s*=\s*\[([^\]]*)\]", terraform_code(TERRAFORM / "services.tf"), re.M
    )
    assert found, f"services.tf: no local {name}"
    return hcl_strings(found[1])


def granted_by_policy(
    policy: str, fields: dict[str, list[str]], grants: list[tuple[str, str, list[str]]]
) -> set[str]:
    """The actions of a jsonencode({... Statement = ...}) policy of services.tf: statements
    under `for x in [<...>.<field>] : {...} if length(x) > 0` count when `fields[field]` is
    non-empty; `Action = grant.actions` is every action of `grants`; `local.<list>` is read."""
    granted: set[str] = set()
    for match in re.finditer(r"\bAction\s*=\s*(.+?)\s*$", policy, re.M):
        start, _ = enclosing_block(policy, match.start())
        opening = policy[policy.rfind("\n", 0, start) + 1 : start]
        guard = re.search(r"for \w+ in \[[\w.]*?\.(\w+)\]", opening)
        if guard and not fields[guard[1]]:
            continue
        expression = match[1]
        if expression.startswith("["):
            granted.update(hcl_strings(expression))
        elif expression.startswith("local."):
            granted.update(terraform_local_list(expression.removeprefix("local.")))
        elif expression == "grant.actions":
            granted.update(action for _, _, actions in grants for action in actions)
        else:
            raise AssertionError(f"services.tf: cannot read Action = {expression}")
    return granted


def terraform_granted_actions() -> dict[str, set[str]]:
    """Deployable (the services, and "cli") → the IAM actions Terraform grants its task role."""
    code = terraform_code(TERRAFORM / "services.tf")
    services_policy = hcl_block(code, "task_policies = {")
    granted = {
        name: granted_by_policy(services_policy, svc, svc["s3"])
        for name, svc in terraform_services().items()
    }
    cli = hcl_block(code, "cli_task = {")
    cli_grants = [
        (bucket, keys, hcl_strings(actions))
        for bucket, keys, actions in re.findall(
            r'\{\s*bucket\s*=\s*"(\w+)",\s*keys\s*=\s*"([^"]*)",\s*actions\s*=\s*\[([^\]]*)\]', cli
        )
    ]
    lists = re.search(r"\blists\s*=\s*\[([^\]]*)\]", cli)
    granted["cli"] = granted_by_policy(
        hcl_block(code, "cli_task_policy = jsonencode({"),
        {"lists": hcl_strings(lists[1]) if lists else []},
        cli_grants,
    )
    return granted


def deployable_needs(name: str) -> dict[str, set[str]]:
    modules = workspace_modules()
    if name == "cli":
        return needed_actions(reachable_units(list(CLI_TASK_ROOTS), CLI_TASK_FUNCTIONS))
    package = f"ingest_{name}"
    roots = [m for m in modules if m == package or m.startswith(package + ".")]
    return needed_actions(reachable_units(roots))


def test_the_code_scan_sees_the_aws_calls_it_must() -> None:
    """The scan is alive: known calls are found where they are (guards a stale regex or a
    refactoring that hides the clients from it)."""
    batcher = deployable_needs("batcher")
    assert "ingest_batcher.handler.BatchHandler._open" in batcher["s3:GetObject"] or any(
        f.startswith("ingest_batcher.handler.") for f in batcher["s3:GetObject"]
    ), batcher["s3:GetObject"]
    assert any("(404)" in f for f in batcher["s3:ListBucket"]), "the batcher's object-gone path"
    assert "sns:Publish" in batcher
    assert "events:PutEvents" in batcher
    assert "sqs:ReceiveMessage" in deployable_needs("indexer"), "the consumer's receive"
    cli = deployable_needs("cli")
    assert {"sqs:ReceiveMessage", "sqs:SendMessage", "s3:ListBucket", "s3:PutObject"} <= set(cli)
    assert "sqs:CreateQueue" not in cli, "ingest bootstrap is not run by the CLI task"
    # The api: upload forms (PutObject), heads of uploads/ that tell a missing ZIP by its
    # 404 (ListBucket), and none of the consumers' queue calls: it runs no Consumer.
    api = deployable_needs("api")
    assert any(f.startswith("ingest_api.app.") for f in api["s3:PutObject"]), api
    assert any("(404)" in f for f in api["s3:ListBucket"]), "the api's object_exists"
    assert not any(action.startswith("sqs:") for action in api), sorted(api)


@pytest.mark.parametrize("name", [*sorted(terraform_services()), "cli"])
def test_each_task_role_is_granted_what_its_code_calls_and_no_more(name: str) -> None:
    """Every IAM action the deployable's code needs is granted to its task role in
    services.tf, and every action granted is needed (or allowed, with a reason, in
    ALLOWED_UNUSED). Remove a grant, or add a call, and this fails."""
    needs = deployable_needs(name)
    granted = terraform_granted_actions()[name]
    missing = {action: sorted(where) for action, where in needs.items() if action not in granted}
    assert not missing, f"{name}'s task role lacks what its code calls:\n" + "\n".join(
        f"  {action}: {', '.join(where)}" for action, where in sorted(missing.items())
    )
    unused = granted - set(needs) - set(ALLOWED_UNUSED.get(name, {}))
    assert not unused, (
        f"{name}'s task role is granted {sorted(unused)}, which no code path of it calls"
        " (remove the grant, or explain it in ALLOWED_UNUSED)"
    )


# --- 12. delivery: images, ECR, the workflows ------------------------------------------------

WORKFLOWS = ROOT / ".github" / "workflows"
DEPLOY_SCRIPT = ROOT / ".github" / "scripts" / "ecs-deploy.sh"


def workflow(name: str) -> dict[Any, Any]:
    data = yaml.safe_load((WORKFLOWS / name).read_text())
    assert isinstance(data, dict), f"{name} is not a mapping"
    return data


def test_every_action_is_pinned_by_commit_and_checkout_keeps_no_credentials() -> None:
    """`uses: owner/repo@<40 hex>  # vX.Y.Z` (a tag can be moved, a commit cannot), local
    reusable workflows aside; every checkout has persist-credentials: false."""
    problems = []
    for path in sorted(WORKFLOWS.glob("*.y*ml")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            match = re.match(r"^\s*(?:-\s*)?uses:\s*(\S+)(.*)$", line)
            if not match or match[1].startswith("./"):
                continue
            if not re.fullmatch(r"[\w.-]+/[\w./-]+@[0-9a-f]{40}", match[1]):
                problems.append(f"{path.name}:{number}: {match[1]} is not pinned to a commit")
            elif not re.match(r"\s*#\s*v\d+(\.\d+)*\b", match[2]):
                problems.append(f"{path.name}:{number}: {match[1]} has no `# vX.Y.Z` comment")
        data = yaml.safe_load(path.read_text())
        for job_name, job in data.get("jobs", {}).items():
            for step in job.get("steps", []):
                checkout = str(step.get("uses", "")).startswith("actions/checkout@")
                if checkout and (step.get("with") or {}).get("persist-credentials") is not False:
                    problems.append(f"{path.name}: job {job_name} checks out with credentials")
    assert not problems, "\n".join(problems)


def test_deploy_builds_every_image_once_then_migrates_then_rolls_every_service() -> None:
    jobs = workflow("deploy.yml")["jobs"]
    on = workflow("deploy.yml")[True]  # PyYAML reads the key `on` as True
    assert on["push"]["branches"] == ["main", "develop"]
    built = set(jobs["build"]["strategy"]["matrix"]["image"])
    assert built == set(PACKAGES), (
        f"deploy.yml builds {sorted(built)}, the packages are {sorted(PACKAGES)}"
    )
    rolled = set(jobs["roll"]["strategy"]["matrix"]["service"])
    assert rolled == set(SERVICES), (
        f"deploy.yml rolls {sorted(rolled)}, the services are {sorted(SERVICES)}"
    )
    assert jobs["build"]["needs"] == "ci"
    assert jobs["ci"]["uses"] == "./.github/workflows/ci.yml"
    assert jobs["migrate"]["needs"] == "build", "migrate must wait for every image"
    assert jobs["roll"]["needs"] == "migrate", "no service may roll before migrate succeeded"
    for name, job in jobs.items():
        if name == "ci":
            continue
        assert job["permissions"] == {"contents": "read", "id-token": "write"}, name
        assert "main" in job["environment"], name
        assert "production" in job["environment"], name
        creds = [s for s in job["steps"] if "configure-aws-credentials" in str(s.get("uses"))]
        assert creds, f"{name}: no aws-actions/configure-aws-credentials"
        assert "role-to-assume" in creds[0]["with"], f"{name}: no OIDC role"
        assert "aws-access-key-id" not in creds[0]["with"], f"{name}: long-lived keys"
    assert workflow("deploy.yml")["permissions"] == {}
    # The image tag is the commit; nothing deploys `latest`.
    assert workflow("deploy.yml")["env"]["IMAGE_TAG"] == "${{ github.sha }}"
    for text in (DEPLOY_SCRIPT.read_text(), (WORKFLOWS / "deploy.yml").read_text()):
        assert not re.search(r":latest\b|tag[= ]+latest\b", text), "something deploys latest"
    # Targets: the services' and the CLI's stages of the Dockerfile.
    script = DEPLOY_SCRIPT.read_text()
    stages = {stage.name for stage in dockerfile_stages()}
    for target in re.findall(r"--target (\w+)", script):
        assert target in stages, f"ecs-deploy.sh builds target {target}, not a Dockerfile stage"
    assert set(re.findall(r"--target (\w+)", script)) == set(STAGE_OF.values())


def test_rollback_offers_the_services_and_the_images_ecr_keeps() -> None:
    dispatch = workflow("rollback.yml")[True]["workflow_dispatch"]["inputs"]
    assert set(dispatch["service"]["options"]) == set(SERVICES)
    assert dispatch["image_tag"]["default"] == "previous"
    assert set(dispatch["environment"]["options"]) == {"staging", "production"}
    assert workflow("rollback.yml")["concurrency"]["group"] == "deploy-${{ inputs.environment }}"
    assert (
        (workflow("deploy.yml")["concurrency"]["group"])
        == "deploy-${{ github.ref_name == 'main' && 'production' || 'staging' }}"
    ), "deploy and rollback must share a concurrency group per environment"


def test_ecr_keeps_three_immutable_images_and_the_workflows_tag_what_it_keeps() -> None:
    """Immutable tags, scan on push, and a lifecycle policy per repository whose first rule
    keeps the images tagged with the prefix that ecs-deploy.sh gives a deployed image."""
    repository = terraform_resources("aws_ecr_repository")["image"][1]
    assert attribute(repository, "image_tag_mutability") == '"IMMUTABLE"'
    assert re.search(r"scan_on_push\s*=\s*true", repository)
    assert attribute(repository, "for_each") == "local.images"
    policy = terraform_resources("aws_ecr_lifecycle_policy")["keep"][1]
    assert attribute(policy, "for_each") == "aws_ecr_repository.image"
    ecr = terraform_code(TERRAFORM / "ecr.tf")
    prefix = re.search(r'deployed_tag_prefix\s*=\s*"([^"]+)"', ecr)
    assert prefix
    assert prefix[1] == "deployed-${var.environment}-"
    rules = re.findall(r"rulePriority\s*=\s*(\d+)", policy)
    assert rules == ["1", "2"], rules
    first, second = policy.split("rulePriority = 2")
    assert "tagPrefixList = [local.deployed_tag_prefix]" in first
    assert 'countType     = "imageCountMoreThan"' in first
    assert 'tagStatus   = "any"' in second  # the rest: the newest never-deployed ones
    script = DEPLOY_SCRIPT.read_text()
    assert 'echo "deployed-${DEPLOY_ENVIRONMENT}-' in script, "the deploy tag's prefix moved"
    assert '--arg prefix "deployed-${DEPLOY_ENVIRONMENT}-"' in script, "rollback's prefix moved"
    default = re.search(
        r'variable "images_kept" \{.*?default\s*=\s*(\d+)', terraform_text("variables.tf"), re.S
    )
    assert default
    assert default[1] == "3"
    assert 'IMAGES_KEPT="${IMAGES_KEPT:-3}"' in script


def test_services_roll_back_on_the_circuit_breaker_and_their_error_rate_alarm() -> None:
    service = terraform_resources("aws_ecs_service")["service"][1]
    breaker = hcl_block(service, "deployment_circuit_breaker {")
    assert re.search(r"enable\s*=\s*true", breaker)
    assert re.search(r"rollback\s*=\s*true", breaker)
    alarms = hcl_block(service, "alarms {")
    assert re.search(r"enable\s*=\s*true", alarms)
    assert re.search(r"rollback\s*=\s*true", alarms)
    assert "aws_cloudwatch_metric_alarm.error_rate[each.key].alarm_name" in alarms
    # The api consumes no message: its 5xx rate is its deployment alarm.
    assert 'each.key == "api" ? [aws_cloudwatch_metric_alarm.api_5xx_rate.alarm_name] :' in alarms
    assert "error_rate" in terraform_resources("aws_cloudwatch_metric_alarm")
    # The workflows own the task definition after creation.
    ignored = re.search(r"ignore_changes\s*=\s*\[([^\]]*)\]", service)
    assert ignored
    assert "task_definition" in ignored[1]
    assert "desired_count" in ignored[1]


def test_terraform_needs_only_the_providers_the_lock_file_pins() -> None:
    """Every provider required is in .terraform.lock.hcl (make deploy-check inits with
    -lockfile=readonly from the mirror); no resource of a provider that is not required
    (random_password was one: the password is now ephemeral and write-only)."""
    versions = terraform_code(TERRAFORM / "versions.tf")
    required = set(re.findall(r'source\s*=\s*"([\w-]+/[\w-]+)"', versions))
    lock = (TERRAFORM / ".terraform.lock.hcl").read_text()
    locked = set(re.findall(r'provider "registry\.terraform\.io/([\w-]+/[\w-]+)"', lock))
    assert required == locked, (
        f"versions.tf requires {sorted(required)}, the lock pins {sorted(locked)}"
    )
    local_names = {source.split("/")[1] for source in required}
    for path in sorted(TERRAFORM.glob("*.tf")):
        for kind in re.findall(
            r'^(?:resource|data|ephemeral)\s+"(\w+?)_', terraform_code(path), re.M
        ):
            assert kind in local_names, f"{path.name}: a {kind}_* resource, but no {kind} provider"
    rds = terraform_resources("aws_db_instance")["db"][1]
    assert attribute(rds, "password") is None, "the password would be in the state"
    assert attribute(rds, "password_wo") is not None
    secret = terraform_resources("aws_secretsmanager_secret_version")["database_url"][1]
    assert attribute(secret, "secret_string") is None
    assert attribute(secret, "secret_string_wo")
    assert attribute(rds, "password_wo_version") == attribute(secret, "secret_string_wo_version"), (
        "the database and the DSN secret must change password in the same run"
    )


def test_the_cli_task_runs_migrate_with_its_own_role() -> None:
    task = terraform_resources("aws_ecs_task_definition")["cli"][1]
    assert attribute(task, "task_role_arn") == "aws_iam_role.cli.arn"
    assert 'command   = ["migrate"]' in task
    policy = terraform_resources("aws_iam_role_policy")["cli"][1]
    assert attribute(policy, "role") == "aws_iam_role.cli.id"
    assert attribute(policy, "policy") == "local.cli_task_policy"
    script = DEPLOY_SCRIPT.read_text()
    assert '"${NAME_PREFIX}-cli" cli' in script, "migrate runs another task definition family"
    family = attribute(task, "family")
    assert family == '"${var.name}-cli"', family


# --- 13. the HTTP API: its image, compose service, load balancer, CORS ----------------------


def test_the_dependency_layer_copies_every_workspace_members_manifest() -> None:
    """uv sync --no-install-workspace needs every member's pyproject.toml to see the
    workspace: each one is copied before the first `uv sync`."""
    builder = next(stage for stage in dockerfile_stages() if stage.name == "builder")
    copied: set[str] = set()
    for keyword, args in builder.instructions:
        if keyword == "RUN" and "uv sync" in args:
            break
        if keyword == "COPY":
            copied.update(posixpath.normpath(w) for w in shlex.split(args)[:-1] if "--" not in w)
    members = {
        (path / "pyproject.toml").relative_to(ROOT).as_posix()
        for path in [ROOT / "libs" / "common", *PACKAGES.values()]
    }
    assert members <= copied, f"the dependency layer lacks {sorted(members - copied)}"


def api_settings(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Any:
    return container_settings(settings_class("api"), env, monkeypatch)


def test_compose_publishes_the_api_port_and_checks_its_readiness(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    name, service, build = compose_service_for("api")
    env = image_environment(stage_chain(build.target)) | compose_environment(service)
    settings = api_settings(env, monkeypatch)
    published = [str(p) for p in service.get("ports", [])]
    targets = {int(interpolate(p).rsplit(":", 1)[1]) for p in published}
    assert targets == {settings.api_port}, f"compose {name} publishes {published}"
    assert all(interpolate(p).startswith("127.0.0.1:") for p in published), "not on loopback"
    test = service["healthcheck"]["test"]
    assert "/readyz" in test[-1], f"compose {name}: the health check is not readiness: {test}"


def terraform_number(path: str, name: str) -> int:
    found = re.search(rf"^\s*{name}\s*=\s*(\d+)\s*$", terraform_code(TERRAFORM / path), re.M)
    assert found, f"{path}: no `{name} = <number>`"
    return int(found[1])


def test_the_api_load_balancer_forwards_to_the_api_port_and_checks_readiness(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The target group, the container's port mappings and the ECS service's load_balancer
    are the port the API listens on in the task; the ALB's health check asks /readyz on its
    health port (the API's own port has none)."""
    api_port = terraform_number("api.tf", "api_port")
    health_port = terraform_number("ecs.tf", "health_port")
    services_tf = terraform_code(TERRAFORM / "services.tf")
    assert 'name == "api" ? { INGEST_API_PORT = tostring(local.api_port) } : {}' in services_tf
    env = (
        image_environment(stage_chain("service"))
        | terraform_service_environment()
        | {"INGEST_API_PORT": str(api_port)}
    )
    settings = api_settings(env, monkeypatch)
    assert settings.api_port == api_port
    assert settings.health_port == health_port, "the ALB would probe another port"

    group = terraform_resources("aws_lb_target_group")["api"][1]
    assert attribute(group, "port") == "local.api_port"
    assert attribute(group, "target_type") == '"ip"', "awsvpc tasks register by IP"
    check = hcl_block(group, "health_check {")
    assert attribute(check, "path") == '"/readyz"'
    assert attribute(check, "port") == "tostring(local.health_port)"
    health = (ROOT / "libs/common/src/ingest_common/runtime/health.py").read_text()
    assert 'add_get("/readyz"' in health, "the health server has no /readyz"

    task = terraform_resources("aws_ecs_task_definition")["service"][1]
    mappings = hcl_block(task, 'portMappings = each.key == "api" ? [')
    assert re.findall(r"containerPort = local\.(\w+)", mappings) == ["api_port", "health_port"]
    service = terraform_resources("aws_ecs_service")["service"][1]
    balancer = hcl_block(service, 'dynamic "load_balancer" {')
    assert (
        attribute(balancer, "for_each") == 'each.key == "api" ? [aws_lb_target_group.api.arn] : []'
    )
    assert attribute(balancer, "container_port") == "local.api_port"
    assert attribute(balancer, "container_name") == "each.key"


def test_the_api_load_balancer_speaks_tls_and_redirects_http() -> None:
    listeners = terraform_resources("aws_lb_listener")
    https, http = listeners["api_https"][1], listeners["api_http"][1]
    assert attribute(https, "port") == "443"
    assert attribute(https, "protocol") == '"HTTPS"'
    assert attribute(https, "certificate_arn") == "var.api_certificate_arn"
    assert "TLS13" in (attribute(https, "ssl_policy") or ""), "an old TLS policy"
    assert attribute(hcl_block(https, "default_action {"), "target_group_arn") == (
        "aws_lb_target_group.api.arn"
    )
    assert attribute(http, "port") == "80"
    redirect = hcl_block(http, "redirect {")
    assert attribute(redirect, "protocol") == '"HTTPS"'
    assert attribute(redirect, "port") == '"443"'
    lb = terraform_resources("aws_lb")["api"][1]
    assert attribute(lb, "internal") == "false"
    assert attribute(lb, "subnets") == "var.public_subnet_ids"
    assert attribute(lb, "drop_invalid_header_fields") == "true"


def test_the_load_balancer_keeps_event_streams_open_and_drains_in_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An idle connection outlives the ALB's idle timeout only if the heartbeat comes more
    often; aiohttp's keep-alive must outlast the ALB's (else the ALB reuses a connection the
    task just closed: a 502). A deregistered task gets SIGTERM after the deregistration
    delay: ordinary requests are done by then, streams end on SIGTERM and reconnect."""
    from aiohttp import web_protocol

    settings = api_settings(
        image_environment(stage_chain("service")) | terraform_service_environment(), monkeypatch
    )
    idle = terraform_number("api.tf", "api_idle_timeout")
    keepalive = inspect_default(web_protocol.RequestHandler, "keepalive_timeout")
    assert settings.api_heartbeat_interval < idle < keepalive, (
        f"heartbeat {settings.api_heartbeat_interval} s, ALB idle {idle} s, aiohttp keep-alive"
        f" {keepalive} s"
    )
    lb = terraform_resources("aws_lb")["api"][1]
    assert attribute(lb, "idle_timeout") == "local.api_idle_timeout"
    delay = terraform_number("api.tf", "api_deregistration_time")
    group = terraform_resources("aws_lb_target_group")["api"][1]
    assert attribute(group, "deregistration_delay") == "local.api_deregistration_time"
    assert 0 < delay <= settings.drain_timeout, f"deregistration delay {delay} s"
    assert settings.api_stream_timeout > idle


def inspect_default(function: Any, parameter: str) -> float:
    import inspect

    default = inspect.signature(function).parameters[parameter].default
    assert isinstance(default, int | float), f"{function.__qualname__}({parameter}=...)"
    return float(default)


def test_only_the_load_balancer_reaches_the_api_tasks() -> None:
    """The ALB is open on 443 and 80 to var.api_allowed_cidrs; the api's tasks accept their
    two ports from the ALB's security group and nothing else; the shared task group has no
    ingress at all."""
    groups = terraform_resources("aws_security_group")
    assert "ingress" not in groups["tasks"][1], "the tasks' shared group lets something in"
    assert "ingress" not in groups["api_tasks"][1]
    ingress = terraform_resources("aws_vpc_security_group_ingress_rule")
    assert set(ingress) == {"api_lb", "api_tasks"}, sorted(ingress)
    tasks_rule = ingress["api_tasks"][1]
    assert attribute(tasks_rule, "for_each") == "local.api_task_ports"
    assert attribute(tasks_rule, "security_group_id") == "aws_security_group.api_tasks.id"
    assert attribute(tasks_rule, "referenced_security_group_id") == "aws_security_group.api_lb.id"
    assert attribute(tasks_rule, "cidr_ipv4") is None
    ports = hcl_block(terraform_code(TERRAFORM / "api.tf"), "api_task_ports = {")
    assert dict(re.findall(r"(\w+)\s*=\s*local\.(\w+)", ports)) == {
        "api": "api_port",
        "health": "health_port",
    }
    lb_rule = ingress["api_lb"][1]
    assert attribute(lb_rule, "security_group_id") == "aws_security_group.api_lb.id"
    assert "setproduct([443, 80], var.api_allowed_cidrs)" in (attribute(lb_rule, "for_each") or "")
    service = terraform_resources("aws_ecs_service")["service"][1]
    assert attribute(service, "security_groups") == (
        'each.key == "api" ? [aws_security_group.tasks.id, aws_security_group.api_tasks.id]'
        " : [aws_security_group.tasks.id]"
    )


def test_the_uploads_bucket_cors_comes_from_the_topology() -> None:
    """Every field of topology.json's cors rules reaches aws_s3_bucket_cors_configuration;
    a rule's origins_setting is a setting (INGEST_API_CORS_ORIGINS) whose value Terraform
    holds in a variable, defaulting to the API's own origin."""
    topology = topology_file()
    rules = [r for b in topology["buckets"].values() for r in b.get("cors", [])]
    assert rules, "topology.json declares no cors rule"
    topology_tf = hcl_block(terraform_code(TERRAFORM / "topology.tf"), "cors_rules = {")
    assert "for r in try(b.cors, []) :" in topology_tf
    for rule in rules:
        for key in rule:
            assert f"r.{key}" in topology_tf, f"topology.tf ignores the cors rules' {key!r}"
    cors = terraform_resources("aws_s3_bucket_cors_configuration")["bucket"][1]
    assert "local.cors_rules" in (attribute(cors, "for_each") or "")
    for argument, field_name in (
        ("allowed_origins", "origins"),
        ("allowed_methods", "methods"),
        ("allowed_headers", "headers"),
        ("expose_headers", "expose_headers"),
        ("max_age_seconds", "max_age_seconds"),
        ("id", "id"),
    ):
        assert attribute(cors, argument) == f"cors_rule.value.{field_name}", argument
    settings = {r["origins_setting"] for r in rules if "origins_setting" in r}
    held = hcl_block(terraform_code(TERRAFORM / "api.tf"), "cors_origin_settings = {")
    for setting in settings:
        assert setting in settings_class("api").model_fields, f"{setting} is no api setting"
        assert re.search(rf"^\s*{setting}\s*=\s*.*var\.{setting}\b", held, re.M), (
            f"api.tf: cors_origin_settings does not hold {setting} from var.{setting}"
        )
        assert f"INGEST_{setting.upper()}" in terraform_text("variables.tf")
    assert "[local.api_origin]" in held, "the default origin is not the API's own"


def test_the_api_task_role_may_only_sign_and_read_uploads() -> None:
    """Least privilege, besides what the code scan checks: no queue, no event, S3 only on
    uploads/* of the uploads bucket."""
    api = terraform_services()["api"]
    for field_name in ("consumes", "queues", "reads", "topics", "buses"):
        assert api[field_name] == [], f"services.tf: the api's {field_name} {api[field_name]}"
    assert api["lists"] == ["uploads"]
    assert api["s3"] == [("uploads", "uploads/*", ["s3:PutObject", "s3:GetObject"])]


def test_the_api_request_metric_reaches_cloudwatch_by_attributes_it_has() -> None:
    """ingest_api.app records http.server.request.duration with the method, the route and
    the status: the collector's awsemf keeps it, by service and by route."""
    source = (PACKAGES["api"] / "src" / "ingest_api" / "app.py").read_text()
    names = set(re.findall(r'create_\w+\(\s*"([\w.]+)"', source))
    assert names == {"http.server.request.duration"}, names
    recorded = set(re.findall(r'"(http\.[\w.]+)":', source))
    assert {"http.route", "http.request.method", "http.response.status_code"} <= recorded
    for metric in names:
        sets = [
            d
            for selectors, dims in emf_declarations()
            if any(re.search(s, metric) for s in selectors)
            for d in dims
        ]
        assert frozenset({"service.name"}) in sets, f"ecs-collector.yaml: awsemf drops {metric}"
        for dims in sets:
            assert dims - {"service.name"} <= recorded, f"{metric} by {sorted(dims)}"


def test_base_images_are_literal_and_the_builder_matches_the_runtime() -> None:
    """Dependabot reads only literal FROM lines (dependabot-core#2057); the venv built in
    the builder runs in the runtime, so both are the same Python image."""
    stages = {stage.name: stage for stage in dockerfile_stages()}
    for stage in stages.values():
        assert "$" not in stage.base, f"FROM {stage.base} AS {stage.name}: an ARG hides it"
    assert stages["builder"].base == stages["runtime"].base
    python = re.search(r"^python:(\d+\.\d+)-", stages["runtime"].base)
    assert python, stages["runtime"].base
    env = image_environment(stage_chain("builder"))
    assert env["UV_PYTHON"] == f"/usr/local/bin/python{python[1]}"
