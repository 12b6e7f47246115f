"""The compose services run what the code has: real queues, commands, modules, and settings it reads."""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
import tomllib

import pytest
from django.core.management import get_commands

from arena.core.routing import gpu_queues
from tests.deploy.helpers import DOCKER, argv_lines, is_arena
from tests.helpers import ROOT

# Every way the code reads an environment variable: the typed helpers and os.environ.
READS = re.compile(
    r"""(?:env_(?P<helper>str|int|bool|list|secret)|os\.environ\.get|os\.environ\[|os\.getenv)\(?\s*["'](?P<name>[A-Z][A-Z0-9_]*)["']"""
)


def names_the_code_reads() -> set[str]:
    names = set()
    for path in [*ROOT.glob("arena/**/*.py"), *ROOT.glob("ensembles/**/*.py")]:
        for match in READS.finditer(path.read_text()):
            names.add(match["name"])
            if match["helper"] == "secret":
                names.add(f"{match['name']}_FILE")  # env_secret reads NAME or the file NAME_FILE names
    return names


def celery_lines(compose) -> dict[str, list[str]]:
    """Service name → its `celery -A arena …` argv, for the services that run Celery."""
    found = {}
    for name, service in compose["services"].items():
        for argv in argv_lines(service.get("command", [])):
            if argv[:1] == ["celery"]:
                assert argv[1:3] == ["-A", "arena"], f"{name} runs another Celery app: {argv}"
                found[name] = argv
    return found


def option(argv: list[str], *flags: str) -> str | None:
    for i, arg in enumerate(argv):
        if arg in flags:
            return argv[i + 1]
        for flag in flags:
            if flag.startswith("--") and arg.startswith(flag + "="):
                return arg.split("=", 1)[1]
    return None


def workers(compose) -> dict[str, list[str]]:
    return {name: argv for name, argv in celery_lines(compose).items() if argv[3] == "worker"}


def gpu_services(compose) -> dict[str, dict]:
    return {
        n: service
        for n, service in compose["services"].items()
        if service.get("build", {}).get("dockerfile") == "docker/Dockerfile.gpu"
    }


def shards(compose) -> int:
    values = {
        service["environment"]["ARENA_GPU_SHARDS"] for service in compose["services"].values() if is_arena(service)
    }
    assert len(values) == 1, f"every arena service must agree on ARENA_GPU_SHARDS, got {values}"
    return int(values.pop())


def test_the_workers_together_consume_every_queue_the_code_sends_to_and_no_other(compose):
    real = {"cpu", *gpu_queues(shards(compose))}
    consumed = {name: set(option(argv, "-Q", "--queues").split(",")) for name, argv in workers(compose).items()}
    for name, queues in consumed.items():
        assert queues <= real, f"{name} consumes queues nothing is sent to: {queues - real}"
    assert set().union(*consumed.values()) == real


def test_each_gpu_worker_is_a_solo_pool_on_its_own_gpu(compose):
    gpus = gpu_services(compose)
    assert gpus, "the deployment has GPU workers"
    device_ids = []
    for name, service in gpus.items():
        argv = workers(compose)[name]
        assert option(argv, "--pool", "-P") == "solo", name
        assert set(option(argv, "-Q", "--queues").split(",")) <= set(gpu_queues(shards(compose))), name
        [device] = service["deploy"]["resources"]["reservations"]["devices"]
        assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"], name
        assert len(device["device_ids"]) == 1, f"{name} must reserve exactly one GPU"
        device_ids += device["device_ids"]
    assert len(device_ids) == len(set(device_ids)), f"two GPU workers share a GPU: {device_ids}"
    for name, service in compose["services"].items():
        if name not in gpus:
            assert "devices" not in str(service.get("deploy", {})), f"{name} reserves a GPU but is no GPU worker"


def test_there_is_exactly_one_beat_and_it_runs_alone(compose):
    beats = [name for name, argv in celery_lines(compose).items() if argv[3] == "beat"]
    assert len(beats) == 1
    assert compose["services"][beats[0]].get("deploy", {}).get("replicas", 1) == 1


def test_web_runs_daphne_on_the_projects_asgi_application_and_can_have_replicas(compose):
    web = compose["services"]["web"]
    [argv] = argv_lines(web["command"])
    assert argv[0] == "daphne"
    module, _, attr = argv[-1].partition(":")
    assert callable(getattr(importlib.import_module(module), attr))
    # Replicas need a container port with no fixed host port, or a range of host ports.
    [port] = web["ports"]
    host_ports = port.rsplit(":", 1)[0].rsplit(":", 1)[-1]
    assert "-" in host_ports, f"one fixed host port allows one replica only: {port}"


def test_every_manage_py_command_a_service_runs_exists(compose):
    commands = get_commands()
    ran = []
    for name, service in compose["services"].items():
        for argv in argv_lines(service.get("command", [])):
            if argv[:2] == ["python", "manage.py"]:
                assert argv[2] in commands, f"{name} runs an unknown command: {argv}"
                ran.append(argv[2])
    assert {"migrate", "collectstatic"} <= set(ran)


def test_flower_is_installed_in_the_image_that_runs_it(compose):
    assert "flower" in {argv[3] for argv in celery_lines(compose).values()}
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    installed = re.search(r'pip install [^\n]*"/app\[(?P<extras>[a-z,]+)\]"', (DOCKER / "Dockerfile").read_text())
    assert installed, "the web image installs the project with its deploy extras"
    packages = [req for extra in installed["extras"].split(",") for req in extras[extra]]
    assert any(req.startswith("flower") for req in packages)


def test_every_service_but_the_one_shot_migration_has_a_health_check(compose):
    for name, service in compose["services"].items():
        if service.get("restart") == "no":
            # A job, not a service: the others wait for it to complete successfully.
            waits = [service.get("depends_on", {}).get(name) for service in compose["services"].values()]
            assert {"condition": "service_completed_successfully"} in waits, name
            continue
        test = service.get("healthcheck", {}).get("test")
        assert test and test[0] in ("CMD", "CMD-SHELL"), f"{name} has no health check"


def test_a_heartbeat_health_check_watches_the_file_its_service_tells_the_code_to_touch(compose):
    watched = 0
    for name, service in compose["services"].items():
        check = " ".join(service.get("healthcheck", {}).get("test", []))
        if "heartbeat" in check:
            path = service["environment"]["ARENA_HEARTBEAT_FILE"]
            assert path in check, f"{name} checks another file than {path}"
            watched += 1
    assert watched >= 3  # cpu workers, GPU workers, beat


def test_every_variable_compose_sets_for_the_arena_is_one_the_code_reads(compose):
    reads = names_the_code_reads()
    assert {"DATABASE_URL", "ARENA_SECRET_KEY_FILE", "ARENA_GPU_SHARDS", "ARENA_HEARTBEAT_FILE"} <= reads
    for name, service in compose["services"].items():
        if is_arena(service):
            unread = set(service["environment"]) - reads
            assert not unread, f"{name} sets variables the code never reads: {unread}"


def test_the_required_settings_are_set_and_secret_files_are_mounted(compose):
    for name, service in compose["services"].items():
        if not is_arena(service):
            continue
        env = service["environment"]
        assert env["ARENA_ENV"] == "production", name
        assert env["DATABASE_URL"].startswith("postgres://") and env["REDIS_URL"].startswith("redis://"), name
        assert "ARENA_SECRET_KEY_FILE" in env and "ARENA_SECRET_KEY" not in env, name
        for var, path in env.items():
            if var.endswith("_FILE") and path.startswith("/run/secrets/"):
                secret = path.removeprefix("/run/secrets/")
                assert secret in service["secrets"], f"{name} reads {path} but does not mount secret {secret}"
                assert secret in compose["secrets"], secret
    for secret in compose["secrets"].values():
        assert secret["file"].startswith("./secrets/")  # docker/secrets/, which git ignores


# The web's environment, and the one every worker and the beat share.
@pytest.mark.parametrize("service", ["web", "gpu-worker-0"])
def test_the_settings_load_in_production_from_what_compose_gives_a_service(compose, service, tmp_path):
    env = dict(compose["services"][service]["environment"])
    for var, path in list(env.items()):
        if var.endswith("_FILE") and path.startswith("/run/secrets/"):
            secret = tmp_path / path.removeprefix("/run/secrets/")
            secret.write_text("a-secret-value-only-for-this-test-" + "x" * 40)
            env[var] = str(secret)
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), **env}
    # Django's deployment checks, on the settings compose produces (no database is reached).
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
