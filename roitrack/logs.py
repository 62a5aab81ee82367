"""Logging set-up for every command: text lines, or one JSON object per line.

``ROITRACK_LOG_FORMAT=json`` writes each record as a JSON object with the
time, level, logger and message, plus the fields passed with
``extra={...}``. The formatter adds nothing that the log call did not pass,
so the rule that log calls never carry personal data or secrets covers the
JSON lines too.
"""

from __future__ import annotations

import logging
import os
from datetime import datetime, timezone
from typing import Any, Literal, get_args

import orjson

LogFormat = Literal["text", "json"]
LOG_FORMAT_VARIABLE = "ROITRACK_LOG_FORMAT"
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"

#: Attributes every LogRecord has; anything else on a record came from ``extra``.
_RECORD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """Format a record as one JSON object: ts, level, logger, message, extra fields, exception."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, tz=timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name, value in vars(record).items():
            if name not in _RECORD_ATTRIBUTES and not name.startswith("_"):
                entry[name] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(entry, default=str).decode()


class ConnectionErrorTracebacks(logging.Filter):
    """Log a Kafka client's connection errors as one warning line, without the traceback.

    kafka-python 3.0 logs a reset or refused broker connection with
    ``log.exception`` and then reconnects by itself, so the traceback only hides
    real errors. Its read loop can also run once more after ``close()`` has set
    the socket to None. The client turns that AttributeError into a connection
    error too, so it gets the same one line. Other exceptions keep their
    traceback.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and self._handled_by_client(record):
            error = record.exc_info[1]
            record.msg = f"{record.getMessage()}: {error!r}; the client reconnects"
            record.args = None
            record.exc_info = None
            record.exc_text = None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True

    @staticmethod
    def _handled_by_client(record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, (ConnectionError, TimeoutError)):
            return True
        closed_socket = isinstance(error, AttributeError) and str(error).startswith("'NoneType' object")
        return closed_socket and "network data" in str(record.msg)


def log_format_from_environment() -> LogFormat:
    """Read ``ROITRACK_LOG_FORMAT`` before the settings are loaded; raise SystemExit on a bad value."""
    value = os.environ.get(LOG_FORMAT_VARIABLE, "text").strip().lower() or "text"
    allowed: tuple[LogFormat, ...] = get_args(LogFormat)
    if value not in allowed:
        raise SystemExit(f"{LOG_FORMAT_VARIABLE}={value!r} is invalid; use {' or '.join(allowed)}.")
    return value


def configure_logging(level: str, log_format: LogFormat = "text") -> None:
    """Send every log record to standard error, as text or JSON, at ``level`` and above."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers.clear()
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
    # kafka-python and aiokafka log every connection at INFO; keep their warnings only.
    for noisy in ("kafka", "aiokafka"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    # Filters run on the logger that created the record, so this sits on the module's own logger.
    logging.getLogger("kafka.net.transport").addFilter(ConnectionErrorTracebacks())
