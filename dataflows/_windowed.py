"""The one builder of the windowed jobs (top_users, alerts, sessions).

A windowed job reads the clicks topic, runs one windowed operator on the valid
clicks, and writes three outputs exactly once: its results (encoded by the
job) to its results topic, the late clicks to ``LATE_TOPIC`` and the bad
records to ``DLQ_TOPIC``. A job module declares only what differs, as a
:class:`WindowedJob`::

    JOB = WindowedJob("top_users", TopUsersSettings, windows, window_message,
                      results_topic=lambda s: s.top_users_topic)
    build_flow, flow_from_env = JOB.build_flow, JOB.flow_from_env
    __getattr__ = lazy_flow(flow_from_env)

(The leading underscore keeps this module out of the launcher's job list.)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import bytewax.operators as op
from bytewax.dataflow import Dataflow, Stream

from dataflows.common import clicks_input, job_settings, late_messages, write_outputs
from dataflows.runtime import start_job_runtime
from dataflows.settings import KafkaConnection, WindowedSettings
from operators.metrics import RESULTS
from operators.records import DecodedBatch, LateClick, OutMessage

S = TypeVar("S", bound=WindowedSettings)

#: (results, late clicks): lists per shard activation, as the operators emit them.
WindowedStreams = tuple[Stream[list], Stream[list[LateClick]]]


@dataclass(frozen=True)
class WindowedJob(Generic[S]):
    """What one windowed job is made of."""

    #: The job's name: its ``dataflows`` module, Dataflow id and metrics label.
    name: str
    settings: type[S]
    #: The windowed operator on the valid clicks, configured from the settings.
    windows: Callable[[S, Stream[DecodedBatch]], WindowedStreams]
    #: One result -> its message on ``topic``.
    encode: Callable[[Any, str], OutMessage]
    results_topic: Callable[[S], str]
    #: The job's own cross-field settings rule, checked before anything starts.
    check: Callable[[S], None] | None = None

    def build_flow(self, settings: S, kafka: KafkaConnection) -> Dataflow:
        """The job's dataflow for the given settings."""
        if self.check is not None:
            self.check(settings)
        config = kafka.to_librdkafka()
        flow = Dataflow(self.name)
        clicks = clicks_input(flow, settings, config)
        results, late = self.windows(settings, clicks.oks)
        encoded, late_messages = self._encode(settings, results, late)
        write_outputs(
            "out",
            config,
            settings.dlq_topic,
            [clicks.errs],
            [encoded, late_messages],
            [self.results_topic(settings), settings.late_topic],
        )
        return flow

    def flow_from_env(self) -> Dataflow:
        """Settings from the environment, the runtime started, then the dataflow."""
        settings, kafka = job_settings(self.settings, self.check)
        start_job_runtime(self.name, settings, kafka)
        return self.build_flow(settings, kafka)

    def _encode(
        self, settings: S, results: Stream[list], late: Stream[list[LateClick]]
    ) -> tuple[Stream[list[OutMessage]], Stream[list[OutMessage]]]:
        """Results and late clicks as messages, counted in the job's metrics."""
        encode, topic = self.encode, self.results_topic(settings)
        results_count = RESULTS.labels(self.name)

        def encode_results(xs: list) -> list[OutMessage]:
            results_count.inc(len(xs))
            return [encode(x, topic) for x in xs]

        return (
            op.map("encode", results, encode_results),
            late_messages("encode_late", late, self.name, settings.late_topic),
        )
