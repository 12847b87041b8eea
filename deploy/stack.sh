#!/usr/bin/env bash
# Local development stack: Tansu (Kafka protocol) on 127.0.0.1:19092 and SeaweedFS S3 on 127.0.0.1:18333.
# Usage: deploy/stack.sh up|down|status [--kafka-port N] [--s3-port N] [--kafka-storage memory|s3]
# Everything (data, logs, pid files, generated local-only credentials) lives under .stack/ of the project.
# The logic lives in inctrl/dev/local_stack.py (also used by the test fixtures), so there is one implementation.
set -euo pipefail

PROJECT_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${INCTRL_PYTHON:-$PROJECT_ROOT/.venv/bin/python}"
STACK_ROOT="${INCTRL_STACK_ROOT:-$PROJECT_ROOT/.stack}"

if [[ $# -lt 1 ]] || [[ ! "$1" =~ ^(up|down|status)$ ]]; then
    echo "usage: $0 up|down|status [options]" >&2
    exit 2
fi
if [[ ! -x "$PYTHON" ]]; then
    echo "python not found at $PYTHON (run 'make install' or set INCTRL_PYTHON)" >&2
    exit 2
fi

command="$1"
shift
cd "$PROJECT_ROOT"
exec "$PYTHON" -m inctrl.dev.local_stack "$command" --root "$STACK_ROOT" "$@"
