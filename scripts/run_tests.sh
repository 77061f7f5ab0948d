#!/usr/bin/env bash
# README command two: set up .venv (pinned requirements) and run the whole test suite, one
# worker per core (pytest-xdist; a test module stays on one worker, so its fixtures are made
# once). YT8M_TEST_WORKERS=0 runs everything in this process, one test after another.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup_venv.sh"
exec python -m pytest -q -p no:cacheprovider -n "${YT8M_TEST_WORKERS:-auto}" --dist loadfile \
  tests "$@"
