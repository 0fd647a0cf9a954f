"""Structured logs: one JSON object per line.

Fields passed as `extra={"fields": {...}}` are merged at the top level of the line, so a caller can
use keys that `logging.LogRecord` reserves (`name`, `msg`...). The logger's own name is `logger`.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Mapping
from typing import IO, Any

import orjson

ADMISSION_LOGGER = "kafka_expose.admission"


class JsonFormatter(logging.Formatter):
    """Format a record as one JSON line: time, level, logger, message, then the record's fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": _timestamp(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, Mapping):
            for key, value in fields.items():
                entry.setdefault(str(key), value)
        if record.exc_info and record.exc_info[1] is not None:
            error = record.exc_info[1]
            entry["error"] = f"{type(error).__name__}: {' '.join(str(error).split())}"[:1000]
            entry["traceback"] = self.formatException(record.exc_info)
        try:
            return orjson.dumps(entry, default=str).decode("utf-8")  # one line per admission: keep it cheap
        except TypeError:  # a lone surrogate in a name from the request: escaped by the standard library
            return json.dumps(entry, default=str, separators=(",", ":"))


def _timestamp(created: float) -> str:
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
    return f"{seconds}.{int(created % 1 * 1000):03d}Z"


def configure_logging(level: str = "INFO", stream: IO[str] | None = None) -> None:
    """Send every log record of this process to `stream` (stderr) as JSON lines."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level.upper())


def gunicorn_logconfig(level: str = "INFO") -> dict[str, Any]:
    """A `logging.config.dictConfig` document for gunicorn's `logconfig_dict`: everything as JSON."""
    level = level.upper()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": "webhook.logs.JsonFormatter"}},
        "handlers": {
            "stderr": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}
        },
        "root": {"level": level, "handlers": ["stderr"]},
        "loggers": {
            "gunicorn.error": {"level": level, "handlers": ["stderr"], "propagate": False},
            # one admission line per request is logged by the app; gunicorn's access lines are noise
            "gunicorn.access": {"level": "CRITICAL", "handlers": [], "propagate": False},
        },
    }
