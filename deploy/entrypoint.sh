#!/bin/sh
# Container entrypoint: start one Bytewax process of a clickstream job.
#
#   entrypoint.sh [JOB] [extra bytewax.run arguments]     (or JOB=clicks entrypoint.sh)
#
# The logic (process id from the pod ordinal, peer addresses from the
# StatefulSet's headless service, first-start recovery init, the command line)
# is the package's one launcher, clickstream.launch, which is unit-tested; it
# prints what it does and then replaces itself with
#   python -m bytewax.run dataflows.$JOB [-i ID -a ADDRS] [-w W] [-r DIR -s S -b B]
# See clickstream/launch.py and docs/deploy.md for every variable.
set -eu

exec "${PYTHON:-python}" -m clickstream.launch "$@"
