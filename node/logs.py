"""Structured logging for the node: human text or JSON lines, one setup for us and for libp2p.

Events are log records with an `event` name and `fields` (`log_event(log, "peer_connected",
peer=...)`). In JSON mode each record is one object per line on stderr: `ts`, `level`, `logger`,
`event` (or null), `msg`, and the fields, which is what tests and scripts parse. libp2p's own
records are routed into the same handler at WARNING and above (p2p.libp2p_transport tames its
logger on import; its auto-connector INFO chatter is filtered out).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import IO, Any

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING}
LEVELS["error"] = logging.ERROR
LIBP2P_LEVEL = logging.WARNING
_FIELDS_ATTR = "dsperse_fields"
_EVENT_ATTR = "dsperse_event"


def log_event(logger: logging.Logger, event: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log a named event with structured fields."""
    if logger.isEnabledFor(level):
        text = " ".join(f"{k}={v}" for k, v in fields.items())
        extra = {_EVENT_ATTR: event, _FIELDS_ATTR: fields}
        logger.log(level, "%s %s", event, text, extra=extra)


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": getattr(record, _EVENT_ATTR, None),
            "msg": record.getMessage(),
        }
        for key, value in getattr(record, _FIELDS_ATTR, {}).items():
            doc.setdefault(key, value)
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str, separators=(",", ":"))


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        fmt = "%(asctime)s.%(msecs)03d %(levelname)-7s %(name)s: %(message)s"
        super().__init__(fmt, "%H:%M:%S")
        self.converter = time.gmtime


# libp2p logs these at ERROR for routine events (a peer went away, a redial failed:
# docs/py-libp2p-pitfalls.md P17); our transport counts and reports them itself, so they are
# shown only at debug level.
LIBP2P_ROUTINE_PREFIXES = (
    "Failed to open TCP stream",
    "Failed to open stream to peer",
    "Error sending identify",
    "MultiselectClient handshake",
    "Failed to dial",
)


class _Libp2pFilter(logging.Filter):
    """libp2p: WARNING and up, minus routine errors (it forces some loggers to INFO, P12)."""

    def __init__(self, debug: bool) -> None:
        super().__init__()
        self._debug = debug

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith("libp2p") or self._debug:
            return True
        if record.levelno < LIBP2P_LEVEL:
            return False
        return not str(record.msg).startswith(LIBP2P_ROUTINE_PREFIXES)


def setup_logging(level: str = "info", fmt: str = "text", stream: IO[str] | None = None) -> None:
    """Configure the root logger once for the process (replaces earlier handlers)."""
    if level not in LEVELS or fmt not in ("text", "json"):
        raise ValueError(f"bad log level {level!r} or format {fmt!r}")  # config.py validated them
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(_Libp2pFilter(debug=level == "debug"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(LEVELS[level])
    # libp2p is imported lazily; when it is, p2p.libp2p_transport points its logger at ours.
    lib = logging.getLogger("libp2p")
    lib.handlers.clear()
    lib.propagate = True
    lib.setLevel(logging.DEBUG if level == "debug" else LIBP2P_LEVEL)
