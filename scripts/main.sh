#!/usr/bin/env bash
# The main job: creates .venv if needed, then runs the built-in demo search (CPU, built-in images).
# Extra arguments go to `darts-sr search`, e.g. `bash scripts/main.sh --out runs/demo`.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/ensure_venv.sh"
cd "$root"
exec .venv/bin/darts-sr search "$@"
