"""Deprecated alias of ``python -m clickstream.launch`` (kept for one release).

    python -m clickstream.run_job clicks --recovery-dir DIR [--snapshot-seconds S] [-- -w 2]
    ==  RECOVERY_DIR=DIR RECOVERY_SNAPSHOT_SECONDS=S python -m clickstream.launch clicks -- -w 2

Its flags become the launcher's variables (a flag overrides the variable);
everything else, defaults included, is the launcher's (see docs/deploy.md).
"""

from __future__ import annotations

import argparse
import os
import sys

from clickstream import launch

#: flag -> the launcher's variable
FLAGS = {
    "--recovery-dir": "RECOVERY_DIR",
    "--recovery-partitions": "RECOVERY_PARTITIONS",
    "--snapshot-seconds": "RECOVERY_SNAPSHOT_SECONDS",
    "--backup-seconds": "RECOVERY_BACKUP_SECONDS",
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1 :]
    parser = argparse.ArgumentParser(prog="python -m clickstream.run_job", description=__doc__.split("\n")[0])
    parser.add_argument("job")
    for flag in FLAGS:
        parser.add_argument(flag)
    args = vars(parser.parse_args(argv))
    env = dict(os.environ)
    for flag, name in FLAGS.items():
        value = args[flag[2:].replace("-", "_")]
        if value is not None:
            env[name] = value
    launch.log("warning: python -m clickstream.run_job is deprecated: use python -m clickstream.launch")
    return launch.main([args["job"], "--", *extra], env)


if __name__ == "__main__":
    sys.exit(main())
