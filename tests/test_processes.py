"""bench/_process.py, the one helper that starts, waits for and stops the servers of the tests and benchmarks."""

from __future__ import annotations

import signal
import socket
import sys
from pathlib import Path

import pytest

from bench._process import ProcessError, child_env, free_port, serve, start, stop, wait_for

IGNORES_SIGTERM = (
    "import signal, time\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "print('ignoring SIGTERM', flush=True)\n"
    "time.sleep(120)\n"
)


def test_free_port_is_free_to_bind() -> None:
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_serve_waits_for_an_answer_and_stops_the_server(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(tmp_path)]
    with serve(argv, url=url, log=tmp_path / "server.log", timeout=60) as server:
        assert server.url == url and server.process.poll() is None
        import httpx

        assert httpx.get(url, timeout=10).status_code == 200
    assert server.process.returncode == -signal.SIGTERM


def test_a_child_that_dies_fails_with_its_exit_code_and_log(tmp_path: Path) -> None:
    argv = [sys.executable, "-c", "import sys; print('no such database here'); sys.exit(3)"]
    with pytest.raises(ProcessError, match=r"exited with code 3 before answering on http://127.0.0.1:") as caught:
        with serve(argv, url=f"http://127.0.0.1:{free_port()}", log=tmp_path / "child.log", timeout=60):
            pytest.fail("serve yielded a dead server")
    assert "no such database here" in str(caught.value)


def test_a_child_that_never_answers_fails_after_the_timeout_and_is_stopped(tmp_path: Path) -> None:
    argv = [sys.executable, "-c", "import time; print('busy elsewhere', flush=True); time.sleep(120)"]
    log = tmp_path / "child.log"
    with pytest.raises(ProcessError, match=r"answering on .*: not within 1 s") as caught:
        with serve(argv, url=f"http://127.0.0.1:{free_port()}", log=log, timeout=1):
            pytest.fail("serve yielded a server that never answered")
    assert "busy elsewhere" in str(caught.value)


def test_stop_kills_a_child_that_ignores_sigterm(tmp_path: Path) -> None:
    log = tmp_path / "child.log"
    child = start([sys.executable, "-c", IGNORES_SIGTERM], log=log)
    wait_for(lambda: "ignoring SIGTERM" in log.read_text(), timeout=60, what="the child's first line", process=child)
    assert stop(child, timeout=0.5) == -signal.SIGKILL


def test_child_env_is_offline_and_takes_the_cache_folder(tmp_path: Path) -> None:
    env = child_env({"RAG_DB_DIR": "db"}, cache_dir=tmp_path)
    assert env["HF_HUB_OFFLINE"] == "1" and env["ANONYMIZED_TELEMETRY"] == "False"
    assert env["RAG_CACHE_DIR"] == str(tmp_path) and env["RAG_DB_DIR"] == "db"
