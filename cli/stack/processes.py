"""Background processes the CLI starts and stops: spawn with a log file, stop by pid, measure.

A process is only ever signalled by the pid we recorded when we started it, and only while its
command line still names the program we started (pids are reused), never by name.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path


def spawn(
    command: Sequence[str],
    log_path: Path,
    *,
    env: Mapping[str, str] | None = None,
    user: str | None = None,
    detach: bool = True,
) -> subprocess.Popen[bytes]:
    """Start ``command`` with stdout and stderr appended to ``log_path``.

    ``detach`` puts it in a session of its own, so a Ctrl-C in the terminal that ran ``up`` does
    not reach a server that must outlive the command.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            list(command),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            start_new_session=detach,
            user=user,
        )
    # Kept so the child is reaped by its Popen (no zombie, no "still running" warning when a
    # server outlives the function that started it).
    _children[proc.pid] = proc
    return proc


_children: dict[int, subprocess.Popen[bytes]] = {}


def cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def is_running(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie (an exited child nobody reaped yet)."""
    _reap(pid)
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # The state letter follows the parenthesised command name, which may itself contain spaces.
    return stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X")


def is_ours(pid: int, program: str) -> bool:
    """True if ``pid`` is running and its command line still starts with ``program``."""
    args = cmdline(pid)
    if not args or not args[0].split():
        return False
    # Some servers rewrite their title into argv[0] (redis: "redis-server 127.0.0.1:6380").
    return Path(args[0].split()[0]).name == Path(program).name and is_running(pid)


def stop(pid: int, *, sig: int = signal.SIGTERM, timeout: float = 30.0) -> bool:
    """Send ``sig``, wait up to ``timeout`` s, then SIGKILL. True if it had to be killed."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
    if wait_gone(pid, timeout):
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    wait_gone(pid, 10.0)
    return True


def wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not is_running(pid):
            return True
        time.sleep(0.05)
    return not is_running(pid)


def _reap(pid: int) -> None:
    # Our own exited children stay zombies until waited for.
    child = _children.get(pid)
    if child is not None and child.poll() is not None:
        del _children[pid]


def peak_rss_kib(pid: int) -> int | None:
    """The process's peak resident set size (VmHWM) in KiB, while it is still running."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_open(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def log_tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
