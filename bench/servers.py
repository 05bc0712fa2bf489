"""Processes the benchmark starts and stops: the service, the baseline, moto, a scratch DB.

Everything started here is a subprocess in its own session; it is stopped by
its own pid (and that process group), never by name. Memory is read from
/proc (VmHWM/VmRSS) for the server and all its uvicorn worker children.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _http_ok(port: int, path: str) -> bool:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        conn.request("GET", path)
        ok = conn.getresponse().status < 500
        conn.close()
        return ok
    except OSError:
        return False


@dataclass
class Proc:
    name: str
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_ready(self, path: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n"
                                   + self.tail())
            if _http_ok(self.port, path):
                return
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} not ready after {timeout}s:\n" + self.tail())

    def wait_workers(self, count: int, timeout: float = 60.0) -> None:
        """With --workers N: wait for N children, then until their memory stops growing
        (each spawned worker imports the app itself after the master answers)."""
        deadline = time.monotonic() + timeout
        last, stable = -1.0, 0
        while time.monotonic() < deadline:
            kids = descendants(self.pid)
            if count > 1 and len(kids) < count:
                time.sleep(0.2)
                continue
            total = sum(_status_kib(p, "VmRSS") for p in kids)
            stable = stable + 1 if total == last else 0
            if stable >= 3:
                return
            last = total
            time.sleep(0.25)
        raise RuntimeError(f"{self.name}: workers not settled after {timeout}s")

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 15.0) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout)
        # The process group is the one this process was started in (start_new_session):
        # it holds only our server and its workers.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)


def start(name: str, cmd: list[str], env: dict[str, str], port: int, log_dir: Path,
          cwd: Path = ROOT) -> Proc:
    log = log_dir / f"{name}.log"
    fh = open(log, "wb")  # noqa: SIM115 - the child keeps it
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=fh, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    fh.close()
    return Proc(name, proc, port, log)


def launch_service(env: dict[str, str], workers: int, log_dir: Path,
                   name: str = "service", cwd: Path = ROOT) -> Proc:
    """`engines serve` as production runs it; call wait_ready/wait_workers next.

    The entry script imports `engines` from the interpreter's path: with
    `PYTHONPATH=<a worktree>` in env (bench.ab) that is the worktree's copy.
    """
    port = free_port()
    return start(name, [str(BIN / "engines"), "serve", "--host", "127.0.0.1",
                        "--port", str(port), "--workers", str(workers),
                        "--no-access-log", "--log-level", "warning"], env, port, log_dir, cwd)


def launch_baseline(env: dict[str, str], workers: int, log_dir: Path) -> Proc:
    port = free_port()
    return start("baseline", [sys.executable, "-m", "bench.baseline", "--host", "127.0.0.1",
                              "--port", str(port), "--workers", str(workers)], env, port, log_dir)


def start_moto(env: dict[str, str], log_dir: Path) -> Proc:
    port = free_port()
    proc = start("moto", [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                 env, port, log_dir)
    proc.wait_ready("/moto-api/")
    return proc


# ---- /proc -----------------------------------------------------------------


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _status_kib(pid: int, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree(pid: int) -> list[int]:
    return [pid, *descendants(pid)]


_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of the server and its workers so far."""
    total = 0
    for p in tree(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    return total / _TICK


def reset_peaks(pid: int) -> bool:
    """Reset VmHWM of the server and its workers (`echo 5 > clear_refs`)."""
    ok = True
    for p in tree(pid):
        try:
            Path(f"/proc/{p}/clear_refs").write_text("5")
        except OSError:
            ok = False
    return ok


def memory(pid: int) -> dict[str, object]:
    """Peak (VmHWM) and current (VmRSS) RSS in MiB, per process and summed."""
    procs = {p: {"hwm_mib": _status_kib(p, "VmHWM") / 1024,
                 "rss_mib": _status_kib(p, "VmRSS") / 1024} for p in tree(pid)}
    return {
        "processes": {str(p): v for p, v in procs.items()},
        "sum_hwm_mib": sum(v["hwm_mib"] for v in procs.values()),
        "sum_rss_mib": sum(v["rss_mib"] for v in procs.values()),
        "max_hwm_mib": max((v["hwm_mib"] for v in procs.values()), default=0.0),
    }


# ---- PostgreSQL scratch database ------------------------------------------------


class ScratchDatabase:
    """A throwaway database on the local PostgreSQL, dropped on exit."""

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url
        self.name = f"engines_bench_{uuid.uuid4().hex[:10]}"

    def _admin(self):
        import psycopg

        return psycopg.connect(self.admin_url, autocommit=True, connect_timeout=5)

    def __enter__(self) -> ScratchDatabase:
        with self._admin() as conn:
            conn.execute(f'CREATE DATABASE "{self.name}"')
        return self

    def url(self) -> str:
        """The service's DATABASE_URL: the admin URL, this database, the psycopg driver."""
        from sqlalchemy.engine import make_url

        return (make_url(self.admin_url).set(drivername="postgresql+psycopg", database=self.name)
                .render_as_string(hide_password=False))

    def __exit__(self, *exc: object) -> None:
        with self._admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
