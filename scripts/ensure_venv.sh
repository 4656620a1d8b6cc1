#!/usr/bin/env bash
# Creates .venv at the repository root and installs the package into it, editable, with its dev and export extras
# (pip install -e .[dev,export]), when missing or when pyproject.toml or requirements.txt changed since the last
# install. Sourced by the other scripts; safe to run on its own.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
stamp="$venv/.requirements.sha256"
want="$(cat "$root/pyproject.toml" "$root/requirements.txt" | sha256sum | cut -d' ' -f1)"
if [[ ! -x "$venv/bin/python" ]]; then
    echo "creating $venv" >&2
    python3 -m venv "$venv"
fi
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" || ! -x "$venv/bin/darts-sr" ]]; then
    echo "installing darts_sr[dev,export] into $venv (about two minutes the first time)" >&2
    "$venv/bin/python" -m pip install --quiet --upgrade pip >&2
    (cd "$root" && "$venv/bin/python" -m pip install --quiet -r requirements.txt) >&2
    echo "$want" > "$stamp"
fi
