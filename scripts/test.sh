#!/usr/bin/env bash
# Sets up (scripts/setup.sh), type-checks the package (mypy) and runs the whole test suite:
# unit tests, then integration tests against a real mosquitto that the fixtures start on a
# free 127.0.0.1 port. Arguments, if any, go to pytest (and skip the type check).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [ "$#" -eq 0 ]; then
  echo "test: type check (mypy auth_module)"
  .venv/bin/python -m mypy
fi
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
