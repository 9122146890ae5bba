"""The benchmarks still run end to end (their figures are not judged here: speed belongs
in ``docs/performance.md``, not in a test that a busy machine could fail)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

ROOT = Path(__file__).resolve().parents[2]


def run_bench(*args: str) -> dict:
    proc = subprocess.run([sys.executable, "-m", *args, "--json"], cwd=ROOT,
                          capture_output=True, text=True, timeout=100)
    assert proc.returncode in (0, 1), proc.stderr[-2000:]  # 1: a target missed, still a run
    return json.loads(proc.stdout)


def test_token_latency_bench_runs_and_checks_the_statuses() -> None:
    r = run_bench("bench.token_latency", "--tokens", "40", "--warmup", "10")
    assert r["token_ms"]["n"] == 40 and r["echo_ms"]["n"] == 40
    assert r["status_checked_tokens"] == 10
    assert r["unexpected_status_sequences"] == 0
    assert r["validator_calls"] == 50
    assert 0 < r["token_ms"]["p50"] and 0 < r["echo_ms"]["p50"]


def test_memory_bench_runs() -> None:
    r = run_bench("bench.memory", "--cycles", "3", "--settle", "0.2")
    assert r["readings"], r


def test_token_latency_bench_runs_with_the_console_and_a_subscriber() -> None:
    r = run_bench("bench.token_latency", "--tokens", "40", "--warmup", "10", "--console")
    assert r["console"]["on"] and r["console"]["sse_error"] is None
    assert r["console"]["sse_events"] >= 1
    assert r["unexpected_status_sequences"] == 0 and r["token_ms"]["n"] == 40
    assert r["module_rss_mb"] is None or r["module_rss_mb"] > 0


def test_station_load_bench_runs_and_every_token_is_answered() -> None:
    r = run_bench("bench.station_load", "--evses", "10", "--rate", "50", "--seconds", "1",
                  "--warmup", "10")
    assert r["evses"] == 10 and r["tokens_sent"] == 60 and r["tokens_measured"] == 50
    assert r["tokens_without_authorize_response"] == 0 and r["misrouted"] == 0
    assert r["authorize_statuses"] == {"Accepted": 60}
    assert r["status_sequences"] == {"Processing,Accepted,UsedToStart": 60}
    assert r["evse_commands"]["get_evse"] == 10 and r["validator_calls"] == 60
    assert r["token_ms"]["n"] == 50 and r["targets"]["tokens_without_authorize_response"]["pass"]
