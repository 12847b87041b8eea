#!/usr/bin/env bash
# Serve the operator console on the data a `make demo` run left behind (default .demo): starts that run's
# local stack again, indexes the result objects it wrote (inctrl console --backfill), and prints the stack's
# local admin token (derived from its local-only S3 secret) to sign in with.
# Usage: deploy/console.sh [DATA_DIR]     (make console [CONSOLE_DATA=DIR])
set -euo pipefail

PROJECT_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${INCTRL_PYTHON:-$PROJECT_ROOT/.venv/bin/python}"
DATA="$(cd "${1:-$PROJECT_ROOT/.demo}" 2>/dev/null && pwd)" || { echo "no folder ${1:-.demo}: run 'make demo' first" >&2; exit 2; }
if [[ ! -d "$DATA/stack" ]]; then
    echo "no demo stack under $DATA: run 'make demo' first" >&2
    exit 2
fi

cd "$PROJECT_ROOT"
export INCTRL_STACK_ROOT="$DATA/stack"
already_up=true
"$PYTHON" -m inctrl.dev.local_stack status --root "$DATA/stack" >/dev/null 2>&1 || already_up=false
bash "$PROJECT_ROOT/deploy/stack.sh" up >/dev/null
if [[ "$already_up" == false ]]; then
    trap 'bash "$PROJECT_ROOT/deploy/stack.sh" down >/dev/null' EXIT
fi
# The stack's environment (endpoints, S3 keys, its API tokens), shell-quoted: the token JSON has spaces.
eval "$("$PYTHON" - "$DATA/stack" <<'PY'
import shlex
import sys

from inctrl.dev.local_stack import LocalStack

stack = LocalStack(sys.argv[1], detached=True)
for name, value in stack.endpoints.environment().items():
    print(f"export {name}={shlex.quote(value)}")
print(f"token={shlex.quote(stack.endpoints.api_token('admin'))}")
PY
)"
export INCTRL_INDEX_DATABASE_URL="sqlite:///$DATA/index.sqlite3"

# The checkpoint the demo served (the newest trained one, else its untrained fallback): new reference banks
# must be built with the same detector.
checkpoint="$({ find "$DATA/training" "$DATA/untrained-checkpoint" -name heads.safetensors -printf '%T@ %h\n' 2>/dev/null || true; } \
    | sort -n | tail -1 | cut -d' ' -f2-)"
if [[ -z "$checkpoint" ]]; then
    echo "no checkpoint under $DATA/training: run 'make demo' first" >&2
    exit 2
fi

echo "sign in with the local admin token: $token"
"$PROJECT_ROOT/.venv/bin/inctrl" console --backfill --checkpoint "$checkpoint" "${@:2}"
