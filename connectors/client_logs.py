"""librdkafka's log lines and errors routed through Python logging, rate-limited.

By default every librdkafka client prints its own lines on stderr: a job
started against an unreachable broker printed ~300 ``Connect ... failed``
lines in 10 s. :func:`with_client_logs` adds a ``logger`` and an ``error_cb``
to a client's config so that, process-wide:

* a connection failure (or "all brokers down") is one line,
  ``cannot reach Kafka at <bootstrap>: <reason> (retrying)``, at most once
  per :data:`REPEAT_S`, with the count of lines suppressed since the last;
* any other librdkafka line is rate-limited the same way per facility.

librdkafka hands its lines to Python only when the client is polled (the
source's ``consume``, the sink's ``poll``/``flush``, ``AdminClient.poll``).
Only the bootstrap list and librdkafka's own text are logged: never a config
value (no secret can leak).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from confluent_kafka import KafkaError

#: The shortest time between two lines of one kind (per process).
REPEAT_S = 30.0

#: librdkafka errors that mean "no broker can be reached".
UNREACHABLE_CODES = frozenset({KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN, KafkaError._RESOLVE})
#: librdkafka log facilities of a failed connection.
UNREACHABLE_FACILITIES = frozenset({"FAIL"})

log = logging.getLogger("clickstream.kafka")

_REASON = re.compile(r"failed: (?P<reason>.*?)(?: \(after \d+ms in state \w+\))?$")


def unreachable_reason(text: str) -> str:
    """The useful part of a librdkafka connection error: ``Connection refused``."""
    match = _REASON.search(text)
    return match.group("reason") if match else text


class RateLimitedLog:
    """Lines by kind, each kind at most once per ``interval_s`` (thread-safe)."""

    def __init__(
        self,
        logger: logging.Logger,
        interval_s: float = REPEAT_S,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._logger = logger
        self._interval_s = interval_s
        self._clock = clock
        self._lock = threading.Lock()
        #: kind -> (when its last line was logged, lines suppressed since)
        self._kinds: dict[str, tuple[float, int]] = {}

    def emit(self, kind: str, level: int, message: str) -> bool:
        """Log ``message`` unless a line of ``kind`` was logged less than
        ``interval_s`` ago (then count it). Returns whether it was logged."""
        now = self._clock()
        with self._lock:
            last = self._kinds.get(kind)
            if last is not None and now - last[0] < self._interval_s:
                self._kinds[kind] = (last[0], last[1] + 1)
                return False
            self._kinds[kind] = (now, 0)
        suppressed = last[1] if last is not None else 0
        if suppressed:
            message += f" [{suppressed} similar line(s) suppressed since the last one]"
        self._logger.log(level, "%s", message)
        return True


#: One limiter for the whole process: every client of a job shares it.
LIMITER = RateLimitedLog(log)


class _ClientLogger:
    """What confluent-kafka calls as ``logger.log(level, fmt, facility, client, text)``."""

    def __init__(self, bootstrap: str, limiter: RateLimitedLog):
        self._bootstrap = bootstrap
        self._limiter = limiter

    def log(self, level: int, _fmt: str, facility: str, _client: str, text: str) -> None:
        if facility in UNREACHABLE_FACILITIES:
            report_unreachable(self._limiter, self._bootstrap, text)
        else:
            self._limiter.emit(f"librdkafka:{facility}", level, f"librdkafka {facility}: {text}")

    def error(self, err: KafkaError) -> None:
        if err.code() in UNREACHABLE_CODES:
            report_unreachable(self._limiter, self._bootstrap, err.str())
        else:
            self._limiter.emit(f"error:{err.name()}", logging.ERROR, f"Kafka error: {err.str()}")


def report_unreachable(limiter: RateLimitedLog, bootstrap: str, text: str) -> None:
    limiter.emit(
        f"unreachable:{bootstrap}",
        logging.ERROR,
        f"cannot reach Kafka at {bootstrap}: {unreachable_reason(text)} (retrying)",
    )


def silent_logger(name: str) -> logging.Logger:
    """A logger that swallows librdkafka's lines (for clients whose caller reports)."""
    logger = logging.getLogger(name)
    logger.addHandler(logging.NullHandler())
    logger.propagate = False
    return logger


def with_client_logs(config: Mapping[str, Any], limiter: RateLimitedLog = LIMITER) -> dict[str, Any]:
    """``config`` plus a ``logger`` and ``error_cb`` that route librdkafka's
    lines through ``limiter`` (a caller's own ``logger``/``error_cb`` win)."""
    client = _ClientLogger(str(config.get("bootstrap.servers", "?")), limiter)
    return {"logger": client, "error_cb": client.error, **config}
