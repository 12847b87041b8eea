#!/usr/bin/env bash
# Serve the operator console on the data a `make demo` run left behind (default .demo): starts that run's
# local stack again, indexes the result objects it wrote (inctrl console --backfill), and signs in with a
# local token generated once into DATA/console.token (mode 0600; local development only).
# Usage: deploy/console.sh [DATA_DIR]     (make console [CONSOLE_DATA=DIR])
set -euo pipefail

PROJECT_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${INCTRL_PYTHON:-$PROJECT_ROOT/.venv/bin/python}"
DATA="$(cd "${1:-$PROJECT_ROOT/.demo}" 2>/dev/null && pwd)" || { echo "no folder ${1:-.demo}: run 'make demo' first" >&2; exit 2; }
if [[ ! -d "$DATA/stack" ]]; then
    echo "no demo stack under $DATA: run 'make demo' first" >&2
    exit 2
fi

export INCTRL_STACK_ROOT="$DATA/stack"
already_up=true
INCTRL_STACK_ROOT="$DATA/stack" "$PYTHON" -m services.stack status --root "$DATA/stack" >/dev/null 2>&1 || already_up=false
bash "$PROJECT_ROOT/deploy/stack.sh" up >/dev/null
if [[ "$already_up" == false ]]; then
    trap 'bash "$PROJECT_ROOT/deploy/stack.sh" down >/dev/null' EXIT
fi
# shellcheck disable=SC1091
source "$DATA/stack/stack.env"

token_file="$DATA/console.token"
if [[ ! -s "$token_file" ]]; then
    (umask 077 && "$PYTHON" -c 'import secrets; print(secrets.token_urlsafe(24))' >"$token_file")
fi
token="$(cat "$token_file")"
export INCTRL_API_TOKENS="{\"$token\": {\"subject\": \"operator\", \"scopes\": [\"review\"]}}"
export INCTRL_INDEX_DATABASE_URL="sqlite:///$DATA/index.sqlite3"

# The checkpoint the demo served (the newest trained one, else its untrained fallback): new reference banks
# must be built with the same detector.
checkpoint="$(find "$DATA/training" "$DATA/untrained-checkpoint" -name heads.safetensors -printf '%T@ %h\n' 2>/dev/null \
    | sort -n | tail -1 | cut -d' ' -f2-)"
if [[ -z "$checkpoint" ]]; then
    echo "no checkpoint under $DATA/training: run 'make demo' first" >&2
    exit 2
fi

echo "sign in with the token: $token   (kept in $token_file)"
cd "$PROJECT_ROOT"
"$PROJECT_ROOT/.venv/bin/inctrl" console --backfill --checkpoint "$checkpoint" "${@:2}"
