#!/usr/bin/env bash
# Sets up (scripts/setup.sh) and plays the demo station: broker, auth module, two simulated
# EVSEs, a card reader and a validator, through a scripted session you can follow.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/auth-demo --config config/demo.yaml "$@"
