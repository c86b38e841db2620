"""The benchmark's workload and runs: one seeded workload on the local broker,
then each run on it with fresh output topics (see :mod:`bench.run`)."""

from __future__ import annotations

import gc
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.common import (
    bytewax_cmd,
    delete_topics,
    job_env,
    run_measured,
    wait_for_quiet,
)
from bench.outcome import CLICKS_TOPIC, PROFILES_TOPIC, OutputChecks, _last_json_line


def versions_per_user(args) -> int:
    return 1 + round(args.update_fraction * args.clicks / args.users)


class Bench(OutputChecks):
    def __init__(self, args, broker, code_dir: Path, log_dir: Path):
        self.args = args
        self.broker = broker
        self.bootstrap = broker.bootstrap_servers
        self.code_dir = code_dir
        self.log_dir = log_dir
        self.admin = broker.admin()
        self.report = None  # GenerateReport
        self.rows: list[dict[str, Any]] = []
        self.results: dict[str, dict[str, Any]] = {}
        self.all_results: dict[str, list[dict[str, Any]]] = {}
        self.rep = 0
        self._nested_ready = False

    # -- workload ---------------------------------------------------------
    def generate(self) -> dict[str, Any]:
        from clickstream.generate import GenerateOptions, produce

        args = self.args
        self.broker.create_topics(
            {CLICKS_TOPIC: args.click_partitions, PROFILES_TOPIC: args.profile_partitions}
        )
        options = GenerateOptions(
            users=args.users,
            clicks=args.clicks,
            versions_per_user=versions_per_user(args),
            seed=args.seed,
            start=args.start,
            span_seconds=args.span_hours * 3600,
            bad_fraction=args.bad_fraction,
            unknown_fraction=args.unknown_fraction,
            out_of_order_ms=args.out_of_order_ms,
            profiles_first=True,
        )
        print(
            f"generating: {args.clicks:,} clicks, {args.users:,} users x "
            f"{options.versions_per_user} versions, bad {args.bad_fraction:g}, "
            f"unknown {args.unknown_fraction:g}, span {args.span_hours:g} h ...",
            flush=True,
        )
        report = produce(
            options, {"bootstrap.servers": self.bootstrap}, PROFILES_TOPIC, CLICKS_TOPIC, flush_timeout_s=300
        )
        if report.delivery_failures:
            raise SystemExit(f"bench: workload not delivered: {report.failure_examples}")
        self.report = report
        self.options = options
        bad_clicks = sum(report.bad_records.get("clicks", {}).values())
        bad_profiles = sum(report.bad_records.get("profiles", {}).values())
        self.workload = {
            "options": {k: getattr(options, k) for k in options.__dataclass_fields__},
            "clicks_valid": report.clicks_produced,
            "clicks_unknown_user": report.unknown_user_clicks,
            "clicks_bad": bad_clicks,
            "profiles_valid": report.profiles_produced,
            "profiles_bad": bad_profiles,
            # Every known user's first version is at the start and the TTL is
            # longer than the span, so every known user's click matches.
            "expected_matched": report.clicks_produced - report.unknown_user_clicks,
            "events": report.clicks_produced + bad_clicks,
            "produce_seconds": round(report.elapsed_seconds, 2),
        }
        print(
            f"produced {report.records_produced:,} records in {report.elapsed_seconds:.1f} s "
            f"({report.clicks_produced:,} valid clicks, {bad_clicks:,} bad clicks, "
            f"{report.profiles_produced:,} profile versions, {bad_profiles:,} bad profiles)",
            flush=True,
        )
        return self.workload

    def nested_workload(self) -> dict[str, str]:
        """The workload's topics copied in the nested shape (once); the job's settings for them."""
        from bench.nested import NESTED_MAPPING, copy_nested

        nested = {"CLICKS_TOPIC": CLICKS_TOPIC + "_nested", "PROFILES_TOPIC": PROFILES_TOPIC + "_nested"}
        if not self._nested_ready:
            self.broker.create_topics(
                {
                    nested["CLICKS_TOPIC"]: self.args.click_partitions,
                    nested["PROFILES_TOPIC"]: self.args.profile_partitions,
                }
            )
            copy_nested(self.bootstrap, PROFILES_TOPIC, nested["PROFILES_TOPIC"], None)
            copy_nested(self.bootstrap, CLICKS_TOPIC, nested["CLICKS_TOPIC"], "ts")
            self._nested_ready = True
        return {**nested, **NESTED_MAPPING}

    # -- helpers ----------------------------------------------------------
    def _topics(self, run: str, *kinds: str) -> dict[str, str]:
        safe = run.replace("-", "_")
        topics = {k: f"bench_{safe}_{self.rep}_{k}" for k in kinds}
        self.broker.create_topics(
            {t: (self.args.click_partitions if k == "joined" else 1) for k, t in topics.items()}
        )
        return topics

    def _clicks_env(self, topics: dict[str, str], extra: dict[str, str]) -> dict[str, str]:
        env = {
            "CLICKS_TOPIC": CLICKS_TOPIC,
            "PROFILES_TOPIC": PROFILES_TOPIC,
            "JOINED_TOPIC": topics["joined"],
            "UNMATCHED_TOPIC": topics["unmatched"],
            "DLQ_TOPIC": topics["dlq"],
            "KAFKA_TAIL": "false",
        }
        env.update(extra)
        return job_env(self.code_dir, self.bootstrap, env)

    def run_baseline(self) -> None:
        name = "baseline"
        topics = self._topics(name, "joined", "unmatched", "dlq")
        env = job_env(self.code_dir, self.bootstrap)
        cmd = [
            sys.executable,
            "-m",
            "bench.baseline",
            "--clicks-topic",
            CLICKS_TOPIC,
            "--profiles-topic",
            PROFILES_TOPIC,
            "--out-topic",
            topics["joined"],
            "--dlq-topic",
            topics["dlq"],
            *self._baseline_props(),
        ]
        measured = self._measure(name, [cmd], env)
        outputs = self._count_clicks_outputs(topics)
        problems = self._check_clicks(outputs, exact_matched=True)
        own = _last_json_line(self.log_dir / f"{self._log_name(name)}.log")
        self._record(name, "clicks", measured, outputs, problems, {"baseline_report": own})
        delete_topics(self.admin, topics.values())

    def run_clicks(
        self,
        name: str,
        extra_env: dict[str, str],
        processes: int = 1,
        recovery: bool = False,
        exact_matched: bool = True,
        pairs: bool = False,
    ) -> None:
        topics = self._topics(name, "joined", "unmatched", "dlq", "late")
        env = self._clicks_env(topics, {"LATE_TOPIC": topics["late"], **extra_env})
        settings: dict[str, str] = {}  # the launcher's variables
        recovery_dir = None
        if recovery:
            from clickstream.launch import init_recovery
            from clickstream.launch_config import plan_from_env

            recovery_dir = Path(tempfile.mkdtemp(prefix="bench-recovery-"))
            settings = {
                "RECOVERY_DIR": str(recovery_dir),
                "RECOVERY_SNAPSHOT_SECONDS": str(self.args.snapshot_interval),
            }
            init_recovery(plan_from_env(settings, ["clicks"]))
        if processes == 1:
            commands = [bytewax_cmd("clicks", settings=settings)]
        else:
            from clickstream.broker import free_port

            addresses = ";".join(f"127.0.0.1:{free_port()}" for _ in range(processes))
            commands = [
                bytewax_cmd(
                    "clicks",
                    settings={**settings, "BYTEWAX_ADDRESSES": addresses, "BYTEWAX_PROCESS_ID": str(i)},
                )
                for i in range(processes)
            ]
        measured = self._measure(name, commands, env)
        outputs = self._count_clicks_outputs(topics)
        problems = (
            self._check_pairs(outputs) if pairs else self._check_clicks(outputs, exact_matched=exact_matched)
        )
        extra: dict[str, Any] = {"processes": processes, "env": extra_env}
        if recovery_dir is not None:
            extra["recovery_store_mb"] = round(
                sum(f.stat().st_size for f in recovery_dir.rglob("*") if f.is_file()) / 2**20, 2
            )
            shutil.rmtree(recovery_dir, ignore_errors=True)
        self._record(name, "clicks", measured, outputs, problems, extra)
        delete_topics(self.admin, topics.values())

    def run_top_baseline(self) -> None:
        name = "top-baseline"
        topics = self._topics(name, "top", "late", "dlq")
        env = job_env(self.code_dir, self.bootstrap)
        cmd = [
            sys.executable,
            "-m",
            "bench.baseline_top",
            "--clicks-topic",
            CLICKS_TOPIC,
            "--top-topic",
            topics["top"],
            "--late-topic",
            topics["late"],
            "--dlq-topic",
            topics["dlq"],
            *self._baseline_props(),
        ]
        measured = self._measure(name, [cmd], env)
        outputs = self._count_top_outputs(topics)
        problems = self._check_top(outputs, compare=False)
        own = _last_json_line(self.log_dir / f"{self._log_name(name)}.log")
        if own and own.get("digest") != outputs["digest"]:
            problems.append("the baseline's own digest differs from what is in its topic")
        self._record(name, "top", measured, outputs, problems, {"baseline_report": own})
        delete_topics(self.admin, topics.values())

    def run_top_users(self) -> None:
        name = "top_users"
        topics = self._topics(name, "top", "late", "dlq")
        env = job_env(
            self.code_dir,
            self.bootstrap,
            {
                "CLICKS_TOPIC": CLICKS_TOPIC,
                "TOP_USERS_TOPIC": topics["top"],
                "LATE_TOPIC": topics["late"],
                "DLQ_TOPIC": topics["dlq"],
                "KAFKA_TAIL": "false",
            },
        )
        measured = self._measure(name, [bytewax_cmd("top_users")], env)
        outputs = self._count_top_outputs(topics)
        problems = self._check_top(outputs, compare=True)
        self._record(name, "top", measured, outputs, problems)
        delete_topics(self.admin, topics.values())

    def _baseline_props(self) -> list[str]:
        return [a for kv in self.args.baseline_consumer for a in ("--consumer-property", kv)]

    def _log_name(self, name: str) -> str:
        return name if self.args.repeat == 1 else f"{name}.r{self.rep}"

    def pick_representatives(self) -> None:
        """With --repeat: each run is represented by its median-wall repetition;
        any failed repetition fails the run."""
        for name, reps in self.all_results.items():
            if len(reps) == 1:
                continue
            ordered = sorted(reps, key=lambda r: r["wall_s"])
            chosen = dict(ordered[(len(ordered) - 1) // 2])
            chosen["repeats"] = [
                {
                    k: r.get(k)
                    for k in (
                        "status",
                        "wall_s",
                        "events_per_s",
                        "steady_events_per_s",
                        "cpu_s",
                        "peak_rss_mb",
                        "foreign_cpu_s",
                        "steal_cpu_s",
                        "problems",
                    )
                }
                for r in reps
            ]
            failed = [r for r in reps if r["status"] == "FAILED"]
            if failed:
                chosen["status"] = "FAILED"
                chosen["problems"] = [p for r in failed for p in r["problems"]]
            self.results[name] = chosen

    def _timeout(self, name: str) -> float:
        return self.args.window_timeout if name == "window" else self.args.timeout

    def _measure(self, name: str, commands, env):
        print(
            f"run {self._log_name(name)}: {' '.join(commands[0][1:])}"
            + (f" (x{len(commands)})" if len(commands) > 1 else ""),
            flush=True,
        )
        gc.collect()
        if self.args.wait_quiet > 0:
            cores = wait_for_quiet(self.args.wait_quiet, own_pids=[self.broker.process.pid])
            if cores >= 0.3:
                print(
                    f"  warning: the machine is busy ({cores:.1f} cores used by other processes)", flush=True
                )
        if self.args.profile:
            commands = [
                [
                    str(Path(sys.executable).parent / "py-spy"),
                    "record",
                    "--idle",
                    "--format",
                    "raw",
                    "--rate",
                    "100",
                    "--nonblocking",
                    "-o",
                    str(self.log_dir / f"{self._log_name(name)}.p{i}.folded"),
                    "--",
                    *cmd,
                ]
                for i, cmd in enumerate(commands)
            ]
            self.log_dir.mkdir(parents=True, exist_ok=True)
        return run_measured(
            commands,
            env,
            self.log_dir / f"{self._log_name(name)}.log",
            self._timeout(name),
            broker_pid=self.broker.process.pid,
        )
