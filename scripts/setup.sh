#!/usr/bin/env bash
# Sets up a fresh machine: the mosquitto broker and PC/SC (Debian packages) and a Python venv in .venv
# with this project and its test extras. Safe to run again; it skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v mosquitto >/dev/null 2>&1 && [ ! -x /usr/sbin/mosquitto ]; then
  echo "setup: installing mosquitto (Debian package)"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq mosquitto >/dev/null
fi

# PC/SC: pcscd and the vpcd virtual reader for the tests; swig and libpcsclite-dev to build
# pyscard (it has no wheel for Linux).
PCSC_MISSING=""
[ -x /usr/sbin/pcscd ] || PCSC_MISSING="$PCSC_MISSING pcscd"
[ -e /usr/lib/pcsc/drivers/serial/libifdvpcd.so ] || PCSC_MISSING="$PCSC_MISSING vsmartcard-vpcd"
command -v swig >/dev/null 2>&1 || PCSC_MISSING="$PCSC_MISSING swig"
[ -e /usr/include/PCSC/winscard.h ] || PCSC_MISSING="$PCSC_MISSING libpcsclite-dev"
if [ -n "$PCSC_MISSING" ]; then
  echo "setup: installing$PCSC_MISSING (Debian packages)"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  # shellcheck disable=SC2086
  $SUDO apt-get install -y -qq $PCSC_MISSING >/dev/null
fi

# The console's browser tests drive Debian's chromium with Playwright (no browser download).
if [ ! -x /usr/bin/chromium ]; then
  echo "setup: installing chromium (Debian package, for the console's browser tests)"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq chromium >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  python3 -m venv .venv
fi
if ! .venv/bin/python -c "import auth_module, pytest, pytest_timeout" >/dev/null 2>&1 \
   || [ pyproject.toml -nt .venv/.installed ]; then
  echo "setup: installing the package and its test extras into .venv"
  .venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
  touch .venv/.installed
fi
