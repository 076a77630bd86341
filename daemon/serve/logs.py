"""The daemon's log lines: `log_format = "text"` (one line per event) or `"json"` (one JSON
object per line, for a log pipeline), on stderr; journald's priorities kept either way.

JSON is a logging.Formatter subclass over the standard library's json: a record has few
fields, and a dependency (python-json-logger) would add nothing but a second way to name
them. Each object has `time` (UTC, ISO 8601 with milliseconds), `level`, `logger`,
`message`, and, on a line about one request, the request's `model`, `client_id`,
`request_id` and `error_code` (passed with logging's `extra=`, daemon/core/daemon_core.py
`request_fields`), and `exception` with the traceback when there is one. Only those fields:
nothing of a request's tensors or tokens reaches a record (messages name shapes and dtypes,
never values).

Under systemd (JOURNAL_STREAM is set when stderr is the journal) every line starts with its
sd-daemon(3) priority `<N>`, which journald strips and files as PRIORITY: the JSON object is
then the journal's MESSAGE, one per entry (a traceback stays inside its object).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from datetime import datetime, timezone

# sd-daemon(3) priority prefixes: journald reads "<3>" as an error line, "<6>" as info.
SYSLOG_PRIORITY = {logging.CRITICAL: 2, logging.ERROR: 3, logging.WARNING: 4, logging.INFO: 6,
                   logging.DEBUG: 7}
# What a line about one request may carry (logging `extra=` keys), in this order.
REQUEST_FIELDS = ("model", "client_id", "request_id", "error_code")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in REQUEST_FIELDS:
            value = record.__dict__.get(key)
            if value is not None:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        # default=str: an unexpected object in `extra` must not lose the line
        return json.dumps(entry, ensure_ascii=False, default=str)


class JournalFormatter(logging.Formatter):
    """A priority prefix per line around another formatter's text."""

    def __init__(self, inner: logging.Formatter):
        super().__init__()
        self._inner = inner

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{SYSLOG_PRIORITY.get(record.levelno, 6)}>"
        # One prefix per line: a traceback's lines keep the record's priority.
        return "\n".join(prefix + line for line in self._inner.format(record).splitlines())


def formatter(log_format: str, journal: bool = False) -> logging.Formatter:
    """The formatter for `log_format` ("text" | "json"); journal: stderr is journald's."""
    if log_format == "json":
        inner: logging.Formatter = JsonFormatter()
    else:
        # journald adds its own timestamps
        inner = logging.Formatter("%(name)s: %(message)s" if journal else TEXT_FORMAT)
    return JournalFormatter(inner) if journal else inner


def configure_logging(level: str, log_format: str = "text") -> None:
    """One line per event on stderr, as `log_format` says; under systemd with priorities."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(log_format, journal=bool(os.environ.get("JOURNAL_STREAM"))))
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO), handlers=[handler])
