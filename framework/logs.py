"""One JSON object per log line, so logs of many processes (actors, gateway, model servers) can be merged
and queried; every line written while a request is handled carries its ``request_id``."""

from __future__ import annotations

import contextvars
import json
import logging
import os
import re
import sys
import time
import uuid

# The id of the request being handled in this task: set where a request enters (the gateway, an actor's
# endpoint, the model server) and read by the formatter and by the bus when it sends the next hop.
request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")
# What an id from outside may be: it ends up in log lines and in HTTP and NATS headers, so nothing that could
# forge a line or a header.
_SENSIBLE = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def clean_request_id(value: str | None) -> str:
    """`value` when it is a sensible request id, else ''."""
    return value if value and _SENSIBLE.fullmatch(value) else ""


def new_request_id() -> str:
    return uuid.uuid4().hex


# A credential in a URL (`?token=` on /ws and /v1/events) must not reach a log file, whoever logs the URL.
_SECRET_IN_URL = re.compile(r"((?:^|[?&\s])(?:token|api_key|access_token)=)[^&\s\"']+", re.IGNORECASE)


def redact(text: str) -> str:
    return _SECRET_IN_URL.sub(r"\1[redacted]", text)


_RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    def __init__(self, component: str) -> None:
        super().__init__()
        self.component = component

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "component": self.component,
            "pid": record.process,
            "logger": record.name,
            "msg": redact(record.getMessage()),
        }
        current = request_id.get()
        if current:
            entry["request_id"] = current
        entry.update({k: v for k, v in vars(record).items() if k not in _RESERVED})
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return redact(json.dumps(entry, default=str))


def setup_logging(component: str, level: str | None = None) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(component))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel((level or os.environ.get("ASRPRO_LOG_LEVEL", "INFO")).upper())
    for noisy in ("nats", "httpx", "httpcore", "uvicorn.access", "faster_whisper"):
        logging.getLogger(noisy).setLevel(max(root.level, logging.WARNING))
