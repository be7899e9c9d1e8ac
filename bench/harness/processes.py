"""The driver's side of the long-lived workers: one process in a measured environment, answering
JSON commands one line each (the workers' side is ``bench/workers/worker_protocol.py``).

A worker keeps its imports, database session and state between commands, so the two environments
can be measured alternately, round after round, in one run.
"""

from __future__ import annotations

import json
import os
import selectors
import socket
import subprocess
import time
from pathlib import Path

from .environments import venv_python
from .errors import BenchError
from .redaction import redact, tail


class WorkerProcess:
    """One worker process; what it logs goes to ``log_file``, shown when it fails."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_file: Path) -> None:
        self.name = name
        self.log_file = log_file
        self.info: dict = {}
        self._buffer = b""
        with open(log_file, "ab") as log:
            self.proc = subprocess.Popen(
                argv, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log
            )

    @classmethod
    def start(
        cls, name: str, venv: Path, script: Path, args: list[str], env: dict[str, str], log_file: Path
    ) -> WorkerProcess:
        """``script`` run by ``venv``'s Python, its logs to ``log_file`` (not yet ready)."""
        argv = [str(venv_python(venv)), str(script), *args, "--log-file", str(log_file)]
        return cls(name, argv, env, log_file)

    def ready(self, timeout: float = 300) -> WorkerProcess:
        """Wait for the worker's first answer: its set-up, as ``info``."""
        self.info = self._read(timeout, what="start-up")
        return self

    def _log_tail(self) -> str:
        try:
            return tail(self.log_file.read_text(encoding="utf-8", errors="replace"))
        except OSError:
            return "(no log)"

    def _read(self, timeout: float, what: str) -> dict:
        deadline = time.monotonic() + timeout
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            while b"\n" not in self._buffer:
                left = deadline - time.monotonic()
                if left <= 0 or not sel.select(left):
                    self.kill()
                    raise BenchError(
                        f"{self.name} worker: no answer to {what} within {timeout:.0f} s\n{self._log_tail()}"
                    )
                chunk = os.read(fd, 65536)
                if not chunk:
                    self.proc.wait(timeout=10)
                    raise BenchError(
                        f"{self.name} worker exited (code {self.proc.returncode}) during {what}\n"
                        f"{self._log_tail()}"
                    )
                self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        answer = json.loads(line)
        if not answer.get("ok"):
            raise BenchError(f"{self.name} worker: {redact(str(answer.get('error')))}\n{self._log_tail()}")
        return answer

    def answer_waiting(self) -> bool:
        """Whether an answer can be read without waiting."""
        if b"\n" in self._buffer:
            return True
        assert self.proc.stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout.fileno(), selectors.EVENT_READ)
            return bool(sel.select(0))

    def send(self, **cmd) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(cmd) + "\n").encode())
        self.proc.stdin.flush()

    def receive(self, timeout: float, what: str) -> dict:
        return self._read(timeout, what=what)

    def call(self, timeout: float, **cmd) -> dict:
        self.send(**cmd)
        return self._read(timeout, what=cmd.get("op", "?"))

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.write(b'{"op": "quit"}\n')
                self.proc.stdin.close()
                self.proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                self.kill()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
