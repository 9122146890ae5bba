"""Benchmarks of the auth module against a real mosquitto on loopback.

* ``python -m bench.token_latency`` — provided_token -> authorize_response latency, beside a
  bare two-client MQTT echo round trip on the same broker, in the same run.
* ``python -m bench.memory`` — resident memory of the module process on the demo station.
* ``python -m bench.station_load`` — a station of 100 EVSEs taking 200 tokens/s, open loop.

See ``docs/performance.md`` for the method, the figures and the caveats. This package only
holds small helpers the two benchmarks share; it changes nothing in ``auth_module``.
"""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import math
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

#: the console script, installed next to the interpreter of the venv running the bench
AUTH_MODULE = str(Path(sys.executable).with_name("auth-module"))
PROJECT_ROOT = Path(__file__).resolve().parent.parent


def quiet_logging() -> None:
    """Keep the bench's own BusClients (structlog) from printing info lines."""
    try:
        from auth_module.logs import configure_logging

        configure_logging(level="warning", fmt="console")
    except Exception:  # never let log setup stop a benchmark
        pass


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of an already sorted, non-empty sequence (p in 0..100)."""
    if not sorted_values:
        raise ValueError("no samples")
    rank = max(1, math.ceil(p / 100.0 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def summary_ms(samples_ns: Sequence[int]) -> dict[str, Any]:
    """n, min, p50, p90, p99, max, mean of nanosecond samples, in milliseconds."""
    s = sorted(samples_ns)
    ms = 1e-6
    return {
        "n": len(s),
        "min": s[0] * ms,
        "p50": percentile(s, 50) * ms,
        "p90": percentile(s, 90) * ms,
        "p99": percentile(s, 99) * ms,
        "max": s[-1] * ms,
        "mean": sum(s) / len(s) * ms,
    }


def wait_until(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll ``predicate`` every 5 ms; raise ``TimeoutError`` naming ``what`` after ``timeout``."""
    end = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > end:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.005)


def source_fingerprint() -> str:
    """A short hash of ``auth_module/**/*.py``: which code a figure was measured on."""
    h = hashlib.sha256()
    for path in sorted((PROJECT_ROOT / "auth_module").rglob("*.py")):
        h.update(str(path.relative_to(PROJECT_ROOT)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:12]


def stop_module(proc: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM the module (as a user would), SIGKILL after 10 s."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def run_and_report(name: str, run: Callable[[], dict[str, Any]], as_json: bool,
                   report: Callable[[dict[str, Any]], str]) -> int:
    """A bench's ending, the same for every bench: its result as text or JSON, exit 0 when
    it passed, 1 when a target was missed, 2 (one line per note on stderr) when the bench
    itself could not run."""
    try:
        result = run()
    except Exception as exc:
        print(f"{name}: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        for note in getattr(exc, "__notes__", ()):
            print(f"{name}: {note}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2) if as_json else report(result))
    return 0 if result["pass"] else 1
