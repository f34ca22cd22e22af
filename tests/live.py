"""A real ``flywheel serve`` process on a free port, for tests that need one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
from tests.conftest import free_port


class LiveServer:
    def __init__(
        self, database_url: str, home: Path, *, port: int | None = None, args: tuple[str, ...] = ()
    ) -> None:
        self.args = args
        self.database_url = database_url
        self.home = home
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None
        self.log = home / f"server-{self.port}.log"

    def start(self, timeout: float = 30.0) -> LiveServer:
        self.home.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "FLYWHEEL_DATABASE_URL": self.database_url,
            "FLYWHEEL_HOME": str(self.home),
            "FLYWHEEL_PORT": str(self.port),
        }
        env.pop("FLYWHEEL_URL", None)
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "flywheel.cli", "serve", *self.args],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited: {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"server did not start: {self.log.read_text()[-2000:]}")

    def kill(self) -> None:
        """``kill -9``: no shutdown hooks, no flushing."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()
