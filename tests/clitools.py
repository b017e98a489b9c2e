"""Running the real CLI as a user does: ``python -m numgate …`` in a subprocess."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from conftest import SECRET_KEY


def numgate(
    env: dict[str, str], *args: str, ok: bool = True, cwd: Path | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    p = subprocess.run(
        [sys.executable, "-m", "numgate", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
    )
    if ok:
        assert p.returncode == 0, p.stderr
    return p


def js(env: dict[str, str], *args: str) -> Any:
    return json.loads(numgate(env, *args, "--json").stdout)


def clean_env(**settings: str) -> dict[str, str]:
    """The test process's environment without any NUMGATE_ setting, plus ``settings``."""
    e = {k: v for k, v in os.environ.items() if not k.startswith("NUMGATE_")}
    e.update(settings)
    return e


def cli_env(database_url: str, data_dir: Path) -> dict[str, str]:
    return clean_env(
        NUMGATE_DATABASE_URL=database_url, NUMGATE_DATA_DIR=str(data_dir), NUMGATE_SECRET_KEY=SECRET_KEY
    )


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port: int = s.getsockname()[1]
    s.close()
    return port


def one_line_error(p: subprocess.CompletedProcess[str], code: int = 2) -> str:
    """The single error line of a failed command (no traceback, nothing said about listening)."""
    assert p.returncode == code, (p.returncode, p.stdout, p.stderr)
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), p.stderr
    assert "Traceback" not in p.stderr and "listening" not in p.stderr + p.stdout
    return lines[0]


class Serving:
    def __init__(self, env: dict[str, str], *args: str) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "numgate", "serve", "--port", str(self.port), *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self.url = f"http://127.0.0.1:{self.port}"

    def wait_ready(self) -> None:
        for _ in range(200):
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=1) as r:
                    assert json.loads(r.read())["status"] == "ok"
                return
            except OSError:
                if self.proc.poll() is not None:
                    raise AssertionError(self.proc.communicate()) from None
                time.sleep(0.1)
        raise AssertionError("numgate serve did not answer")
