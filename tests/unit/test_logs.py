"""JSON log lines: fields from the record and its extra, and the format setting."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator

import orjson
import pytest

from roitrack.logs import JsonFormatter, configure_logging, log_format_from_environment


def _record(message: str, *args: object, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("streams.app", logging.WARNING, __file__, 1, message, args, None)
    for name, value in extra.items():
        setattr(record, name, value)
    return record


def test_json_line_has_message_and_extra_fields() -> None:
    line = JsonFormatter().format(_record("sent %d dead letter(s) from person partition=%d", 2, 3,
                                          partition=3, dead_letters=2))

    entry = orjson.loads(line)
    assert entry["level"] == "WARNING"
    assert entry["logger"] == "streams.app"
    assert entry["message"] == "sent 2 dead letter(s) from person partition=3"
    assert entry["partition"] == 3
    assert entry["dead_letters"] == 2
    assert entry["ts"].endswith("+00:00")
    assert "args" not in entry
    assert "msg" not in entry


def test_json_line_has_exception_text() -> None:
    try:
        raise ValueError("broken")
    except ValueError:
        record = _record("failed")
        record.exc_info = sys.exc_info()

    entry = orjson.loads(JsonFormatter().format(record))

    assert "Traceback" in entry["exception"]
    assert "ValueError: broken" in entry["exception"]


def test_json_line_is_one_line() -> None:
    line = JsonFormatter().format(_record("first\nsecond"))

    assert "\n" not in line
    assert orjson.loads(line)["message"] == "first\nsecond"


@pytest.mark.parametrize(("value", "expected"), [("json", "json"), ("JSON", "json"), ("text", "text"), ("", "text")])
def test_log_format_from_environment(monkeypatch: pytest.MonkeyPatch, value: str, expected: str) -> None:
    monkeypatch.setenv("ROITRACK_LOG_FORMAT", value)

    assert log_format_from_environment() == expected


def test_log_format_rejects_unknown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROITRACK_LOG_FORMAT", "xml")

    with pytest.raises(SystemExit, match="ROITRACK_LOG_FORMAT='xml'"):
        log_format_from_environment()


@contextlib.contextmanager
def configured_logging() -> Iterator[logging.Logger]:
    """Configure roitrack's logging until the block ends; yield kafka-python's transport logger.

    Call it inside the test, after ``capsys`` has replaced standard error, so the
    handler writes to the captured stream.
    """
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    configure_logging("info")
    try:
        yield logging.getLogger("kafka.net.transport")
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)


def test_kafka_connection_error_loses_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    with configured_logging() as transport_log:
        try:
            raise ConnectionResetError(104, "Connection reset by peer")
        except ConnectionResetError:
            transport_log.exception("%s: Error receiving network data closing socket", "<conn>")
        try:
            raise ValueError("a bug")
        except ValueError:
            transport_log.exception("unexpected")

    output = capsys.readouterr().err
    reset_line = next(line for line in output.splitlines() if "closing socket" in line)
    assert "WARNING" in reset_line
    assert "ConnectionResetError(104, 'Connection reset by peer')" in reset_line
    assert output.count("Traceback") == 1, "only the ValueError keeps its traceback"


def test_kafka_read_after_close_loses_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    closed_socket = None
    with configured_logging() as transport_log:
        try:
            closed_socket.recv(4096)  # type: ignore[attr-defined]
        except AttributeError:
            transport_log.exception("%s: Error receiving network data closing socket", "<conn>")
        try:
            closed_socket.send(b"")  # type: ignore[attr-defined]
        except AttributeError:
            transport_log.exception("%s: unexpected state", "<conn>")

    output = capsys.readouterr().err
    read_line = next(line for line in output.splitlines() if "closing socket" in line)
    assert "WARNING" in read_line
    assert "'NoneType' object has no attribute 'recv'" in read_line
    assert output.count("Traceback") == 1, "an AttributeError elsewhere keeps its traceback"
