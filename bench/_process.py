"""Child processes for the tests and the benchmarks: a free port, a server started and waited for, stopped for sure.

Every server the tests and benchmarks start (`chroma run`, `python -m demo`, JupyterLab) goes through `serve`:
its output goes to a log file, a dead child or one that never answers fails with its exit code and the end of
that log, and it is stopped with SIGTERM, then SIGKILL when it does not go. Children that are killed on purpose
mid-work (bench/faults.py, tests/test_sync.py) only take `child_env` and `wait_for` from here: when to kill is
theirs to decide.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import httpx

# No phoning home from a child: the machine may be offline, and tests must not depend on the network.
QUIET = {"HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False", "ANONYMIZED_TELEMETRY": "False"}


class ProcessError(RuntimeError):
    """A child process died, or did not get ready in time; the message ends with the tail of its log."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def child_env(extra: Mapping[str, str] | None = None, *, cache_dir: Path | str | None = None) -> dict[str, str]:
    """This process's environment for a child: offline, no telemetry, plus `extra`.

    `cache_dir` becomes `RAG_CACHE_DIR`, where the child keeps its ONNX export of the model; tests pass a
    temporary folder so that nothing lands in the user's ~/.cache/rag.
    """
    env = {**os.environ, **QUIET, **(extra or {})}
    if cache_dir is not None:
        env["RAG_CACHE_DIR"] = str(cache_dir)
    return env


def log_tail(log: Path | str | None, chars: int = 3000) -> str:
    """The last `chars` characters of a log file, or a note saying there is none."""
    if log is None:
        return "(no log)"
    try:
        text = Path(log).read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        return f"(cannot read {log}: {exc.strerror})"
    return text[-chars:] if text.strip() else f"({log} is empty)"


def wait_for(
    condition: Callable[[], Any],
    *,
    timeout: float = 20.0,
    interval: float = 0.25,
    what: str = "the condition",
    process: subprocess.Popen | None = None,
    log: Path | str | None = None,
) -> Any:
    """Poll `condition()` until it returns something truthy, and return that.

    Raises:
        ProcessError: `process` exited first, or `timeout` seconds passed; names `what` and shows the tail of `log`.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if process is not None and process.poll() is not None:
            raise ProcessError(
                f"{describe(process)} exited with code {process.returncode} before {what}; end of its log:\n"
                f"{log_tail(log)}"
            )
        if time.monotonic() > deadline:
            where = f"; end of the log of {describe(process)}:\n{log_tail(log)}" if process is not None else ""
            raise ProcessError(f"{what}: not within {timeout:g} s{where}")
        time.sleep(interval)


def describe(process: subprocess.Popen) -> str:
    """`name arg ...` of a child, short enough for a message."""
    argv = process.args if isinstance(process.args, (list, tuple)) else [str(process.args)]
    text = " ".join(Path(str(a)).name if i == 0 else str(a) for i, a in enumerate(argv))
    return f"`{text[:200]}`"


def answers(url: str, *, statuses: Sequence[int] = (200,)) -> Callable[[], bool]:
    """A readiness check: GET `url` answers with one of `statuses`."""

    def check() -> bool:
        try:
            return httpx.get(url, timeout=5).status_code in statuses
        except httpx.TransportError:
            return False

    return check


def listens(port: int, host: str = "127.0.0.1") -> Callable[[], bool]:
    """A readiness check: something accepts TCP connections on `host:port`."""

    def check() -> bool:
        try:
            socket.create_connection((host, port), timeout=1).close()
        except OSError:
            return False
        return True

    return check


def stop(process: subprocess.Popen, *, timeout: float = 20.0) -> int:
    """SIGTERM, then SIGKILL (to its whole process group) if it has not exited after `timeout` s; the exit code."""
    if process.poll() is None:
        process.terminate()
        try:
            return process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            # Children of the child (JupyterLab's kernels) share its session; take them down with it.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
            process.kill()
    return process.wait()


@dataclass
class Served:
    """A running child server: its process, the log its output goes to, and the URL it answers on."""

    process: subprocess.Popen
    log: Path
    url: str

    def log_text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")


def start(argv: Sequence[str], *, log: Path, env: Mapping[str, str] | None = None, cwd: Path | None = None) -> Any:
    """Start `argv` with stdout and stderr appended to `log`, in a session of its own; returns the Popen."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        return subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else child_env(),
            cwd=cwd,
            start_new_session=True,
        )


@contextlib.contextmanager
def serve(
    argv: Sequence[str],
    *,
    url: str,
    log: Path,
    ready: Callable[[], Any] | None = None,
    statuses: Sequence[int] = (200,),
    timeout: float = 120.0,
    stop_timeout: float = 20.0,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> Iterator[Served]:
    """Start a server, wait until it answers, yield it, and stop it however the block ends.

    Args:
        argv: the command; it must serve on `url`.
        url: where it answers; `ready` defaults to GET `url` answering with one of `statuses`.
        log: file that receives the child's stdout and stderr; its tail is in every failure.
        timeout: seconds to wait for it to get ready.
        stop_timeout: seconds between SIGTERM and SIGKILL.
        env: the child's environment (default `child_env()`).

    Raises:
        ProcessError: the child exited before it was ready, or was not ready within `timeout` s.
    """
    process = start(argv, log=log, env=env, cwd=cwd)
    try:
        wait_for(
            ready or answers(url, statuses=statuses),
            timeout=timeout,
            interval=0.2,
            what=f"answering on {url}",
            process=process,
            log=log,
        )
        yield Served(process, log, url)
    finally:
        stop(process, timeout=stop_timeout)
