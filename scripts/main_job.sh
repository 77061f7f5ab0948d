#!/usr/bin/env bash
# README command one: set up .venv (pinned requirements), then run the main job (the original's
# commands end to end on a bundled synthetic dataset). Options go to scripts/main_job.py.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup_venv.sh"
exec python scripts/main_job.py "$@"
