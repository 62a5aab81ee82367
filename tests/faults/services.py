"""A redis-server with AOF persistence that a fault test can stop, kill and start again on the same port."""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from pathlib import Path

from roitrack.embedded import LOOPBACK_HOST, free_port, redis_answers, redis_server_binary


class AofRedis:
    """A redis-server on a free loopback port, with its data and AOF files in ``data_dir``.

    ``start()`` may be called again after ``terminate()`` or ``kill()``: the server then
    loads the AOF from the same directory and listens on the same port.
    """

    def __init__(self, data_dir: Path, appendfsync: str, start_timeout_s: float = 15.0) -> None:
        if appendfsync not in ("always", "everysec", "no"):
            raise ValueError(f"appendfsync {appendfsync!r} is not one of always, everysec, no")
        self.data_dir = data_dir
        self.appendfsync = appendfsync
        self.start_timeout_s = start_timeout_s
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0
        data_dir.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"redis://{LOOPBACK_HOST}:{self.port}/0"

    @property
    def aof_dir(self) -> Path:
        """Redis 7 keeps its multi-part AOF (base, increments, manifest) in this folder."""
        return self.data_dir / "appendonlydir"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        if self.running:
            raise RuntimeError(f"redis-server is already running on port {self.port}; stop it first")
        self.starts += 1
        command = [
            str(redis_server_binary()),
            "--port", str(self.port),
            "--bind", LOOPBACK_HOST,
            "--dir", str(self.data_dir),
            "--appendonly", "yes",
            "--appendfsync", self.appendfsync,
            # No RDB snapshots: after a restart the data comes from the AOF alone.
            "--save", "",
            "--logfile", str(self.data_dir / f"redis-{self.starts}.log"),
        ]
        self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + self.start_timeout_s
        while not redis_answers(self.url, timeout_s=0.5):
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.process.returncode}; log:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not reply to PING within {self.start_timeout_s} s; log:\n{self.log_tail()}")
            time.sleep(0.05)

    def terminate(self, timeout_s: float = 15.0) -> int:
        """Stop with SIGTERM, which makes Redis flush and fsync its AOF before it exits."""
        return self._stop(signal.SIGTERM, timeout_s)

    def kill(self) -> int:
        """Stop with SIGKILL: no shutdown work. Data written to the AOF file stays in the OS page cache."""
        return self._stop(signal.SIGKILL, 10.0)

    def _stop(self, signum: signal.Signals, timeout_s: float) -> int:
        if self.process is None or self.process.poll() is not None:
            raise RuntimeError(f"redis-server on port {self.port} is not running")
        self.process.send_signal(signum)
        try:
            return self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()

    def snapshot_aof(self, target: Path) -> None:
        """Copy the AOF folder as it is now; restoring the copy later loses every write made after this call."""
        shutil.copytree(self.aof_dir, target)

    def restore_aof(self, source: Path) -> None:
        """Replace the AOF folder with an earlier copy; the server must be stopped."""
        if self.running:
            raise RuntimeError("stop redis-server before replacing its AOF files")
        shutil.rmtree(self.aof_dir)
        shutil.copytree(source, self.aof_dir)

    def log_tail(self, lines: int = 30) -> str:
        path = self.data_dir / f"redis-{self.starts}.log"
        if not path.exists():
            return "(no log)"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def close(self) -> None:
        if self.running:
            assert self.process is not None
            self.process.kill()
            self.process.wait()
