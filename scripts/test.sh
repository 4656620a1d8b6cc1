#!/usr/bin/env bash
# The test command: creates .venv if needed, then runs the linter and the whole test suite.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/ensure_venv.sh"
cd "$root"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
# Two workers of one intra-op thread each: the tests' tensors are tiny, so threads only contend (5 min instead of 9
# on 2 cores). PYTEST_WORKERS=0 runs in one process.
OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" .venv/bin/python -m pytest -n "${PYTEST_WORKERS:-2}" "$@"
