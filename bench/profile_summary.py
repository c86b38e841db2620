"""Summarise py-spy folded stacks (``bench.run --profile`` writes them next to the logs).

``python -m bench.profile_summary bench/results/<ts>-logs/asof.p0.folded [--top 25]``

Prints where the samples are: by leaf frame (self time) and inclusive by frame,
as percentages of all samples. The recordings include idle stacks
(``py-spy --idle``), and only the main thread is counted unless
``--all-threads``: time the worker spends in Bytewax's Rust loop, waiting on
the broker, or sleeping shows up under ``<module> (run.py:...)``, the frame that
calls into Rust, or under the blocking call (e.g. a producer ``flush``).
"""

from __future__ import annotations

import argparse
import collections
import sys


def summarise(path: str, top: int, all_threads: bool = False) -> str:
    leaf: collections.Counter = collections.Counter()
    inclusive: collections.Counter = collections.Counter()
    total = 0
    with open(path) as fh:
        for line in fh:
            stack, _, n = line.rstrip("\n").rpartition(" ")
            if not stack or not n.isdigit():
                continue
            count = int(n)
            frames = stack.split(";")
            if not all_threads and any(f.startswith("Thread._bootstrap") for f in frames):
                continue  # helper threads (e.g. a metrics logger asleep); the worker is the main thread
            total += count
            leaf[frames[-1]] += count
            for frame in set(frames):
                inclusive[frame] += count
    if not total:
        return f"{path}: no samples"
    lines = [f"{path}: {total} samples" + ("" if all_threads else " (main thread)")]
    lines.append("-- self (leaf frame)")
    lines += [f"{v / total * 100:5.1f}%  {k}" for k, v in leaf.most_common(top)]
    lines.append("-- inclusive")
    lines += [f"{v / total * 100:5.1f}%  {k}" for k, v in inclusive.most_common(top)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.profile_summary", description=__doc__.split("\n")[0])
    p.add_argument("paths", nargs="+")
    p.add_argument("--top", type=int, default=25)
    p.add_argument(
        "--all-threads",
        action="store_true",
        help="count every thread (default: the main thread, where the Bytewax worker runs)",
    )
    args = p.parse_args(argv)
    for path in args.paths:
        print(summarise(path, args.top, args.all_threads))
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
