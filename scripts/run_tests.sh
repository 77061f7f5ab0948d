#!/usr/bin/env bash
# README command two: set up .venv (pinned requirements) and run the whole test suite.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup_venv.sh"
exec python -m pytest -q -p no:cacheprovider tests "$@"
