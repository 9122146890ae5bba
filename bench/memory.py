"""Resident memory of the module process on the demo station.

::

    python -m bench.memory [--cycles 200] [--json]

Starts a private mosquitto on a free loopback port, rewrites ``config/demo.yaml`` to that
port (and a reservation store in a temp dir), runs the demo's simulators in this process
(``simulators.launcher.start_station`` with ``config/tokens.yaml``), starts the module as
its own process (``auth-module --config``, the demo's logging settings, output to a file)
and reads the module process's memory with psutil:

* after start (ready, then ``--settle`` seconds),
* after one charging cycle, and after ``--cycles`` cycles, each cycle being: plug in EVSE 1,
  swipe VALID_RFID_1 (UsedToStart); plug in EVSE 2, swipe VALID_RFID_2 (UsedToStart); swipe
  BLOCKED_RFID and an unknown token (Rejected); swipe VALID_RFID_1 again (UsedToStop);
  unplug both.

Reported: RSS, USS (memory only this process holds; psutil ``memory_full_info``), the peak
RSS (VmHWM), the thread count, and the RSS growth per 100 cycles after the first one. The
unknown token is a new value every cycle, so anything kept per token value shows up as
growth (``--cycles 1500`` makes a soak run of 7500 swipes, about a minute). Target: RSS
< 60 MB at every reading (PASS/FAIL). Exit status 0 on PASS, 1 on FAIL, 2 when the bench
itself could not run.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import yaml

from auth_module.bus import BusClient
from bench import AUTH_MODULE, PROJECT_ROOT, quiet_logging, source_fingerprint, stop_module, wait_until, run_and_report
from simulators.broker import Mosquitto
from simulators.launcher import start_station

TARGET_RSS_MB = 60.0
STEP_TIMEOUT_S = 10.0
MB = 1024 * 1024


class StatusLog:
    """Every token_validation_status the module publishes, and its ready messages."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.entries: list[tuple[str, str]] = []
        self.ready = 0

    def on_status(self, value: Any) -> None:
        with self._cond:
            self.entries.append((value["token"]["id_token"]["value"], value["status"]))
            self._cond.notify_all()

    def on_ready(self, _topic: str, _payload: bytes) -> None:
        with self._cond:
            self.ready += 1
            self._cond.notify_all()

    def mark(self) -> int:
        with self._cond:
            return len(self.entries)

    def wait_final(self, token: str, expected: str, since: int) -> None:
        """Wait for ``token``'s first final status published after entry ``since``."""

        def final() -> str | None:
            for t, status in self.entries[since:]:
                if t == token and status not in ("Processing", "Accepted"):
                    return status
            return None

        with self._cond:
            got = self._cond.wait_for(final, STEP_TIMEOUT_S)
        if got != expected:
            raise RuntimeError(f"{token}: final status {got or 'none'}, expected {expected}")


def memory_of(pid: int) -> dict[str, Any]:
    p = psutil.Process(pid)
    out: dict[str, Any] = {"rss_mb": p.memory_info().rss / MB, "threads": p.num_threads()}
    try:
        out["uss_mb"] = p.memory_full_info().uss / MB
    except (psutil.AccessDenied, AttributeError):
        out["uss_mb"] = None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                out["peak_rss_mb"] = int(line.split()[1]) / 1024
    except OSError:
        out["peak_rss_mb"] = None
    return out


def write_demo_station(tmp: Path, port: int) -> Path:
    station = yaml.safe_load((PROJECT_ROOT / "config" / "demo.yaml").read_text())
    station.setdefault("mqtt", {})["port"] = port
    station["mqtt"]["host"] = "127.0.0.1"
    station.setdefault("reservations", {})["store"] = str(tmp / "reservations.json")
    path = tmp / "demo.yaml"
    path.write_text(yaml.safe_dump(station, sort_keys=False))
    return path


def run(cycles: int, settle: float, module_command: list[str] | None = None) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="bench-memory-"))
    log_path = tmp / "auth-module.log"
    command = module_command or [AUTH_MODULE]
    fingerprint = source_fingerprint()
    proc: subprocess.Popen[bytes] | None = None
    station = None
    observer: BusClient | None = None
    readings: dict[str, dict[str, Any]] = {}
    with Mosquitto() as broker:
        try:
            station_path = write_demo_station(tmp, broker.port)
            station = start_station(station_path, PROJECT_ROOT / "config" / "tokens.yaml")
            log = StatusLog()
            observer = BusClient(module_id="bench_observer", host=broker.host,
                                 port=broker.port, prefix="everest/")
            observer.subscribe_var("auth", "main", "token_validation_status", log.on_status)
            observer.subscribe_raw("everest/modules/auth/ready", log.on_ready)
            observer.start()
            if not observer.wait_connected(STEP_TIMEOUT_S) or not observer.wait_subscribed(5):
                raise RuntimeError("observer could not connect to the broker")

            with open(log_path, "ab") as out:
                proc = subprocess.Popen([*command, "--config", str(station_path)], cwd=tmp,
                                        stdout=out, stderr=subprocess.STDOUT)
            wait_until(lambda: log.ready > 0 or proc.poll() is not None, 15.0,
                       "the module's ready message")
            if proc.poll() is not None:
                raise RuntimeError(f"module exited with {proc.returncode}: "
                                   f"{log_path.read_text(errors='replace')[-2000:]}")
            time.sleep(settle)
            readings["after start"] = memory_of(proc.pid)

            evse1, evse2 = station.evse(1), station.evse(2)
            provider = station.provider
            assert provider is not None

            def swipe(token: str, expected: str) -> None:
                since = log.mark()
                provider.swipe(token)
                log.wait_final(token, expected, since)

            def settled() -> None:
                # A command behind the EVSE sims' session events on their own connections:
                # answered => the module has handled those events.
                for sim in (evse1, evse2):
                    sim.bus.call("auth", "reservation", "exists_reservation",
                                 {"request": {"id_token": "X", "evse_id": sim.evse_id}},
                                 timeout=STEP_TIMEOUT_S)

            def charging(sim: Any) -> bool:
                return sim.session_state == "charging"

            for n in range(1, cycles + 1):
                evse1.plug_in()
                settled()
                swipe("VALID_RFID_1", "UsedToStart")
                wait_until(lambda: charging(evse1), STEP_TIMEOUT_S, "EVSE 1 charging")
                evse2.plug_in()
                settled()
                swipe("VALID_RFID_2", "UsedToStart")
                wait_until(lambda: charging(evse2), STEP_TIMEOUT_S, "EVSE 2 charging")
                settled()
                swipe("BLOCKED_RFID", "Rejected")
                swipe(f"UNKNOWN_{n:04d}", "Rejected")
                swipe("VALID_RFID_1", "UsedToStop")
                wait_until(lambda: evse1.session_state == "finished", STEP_TIMEOUT_S,
                           "EVSE 1 finished")
                evse1.plug_out()
                evse2.plug_out()
                settled()
                if n == 1:
                    time.sleep(settle)
                    readings["after 1 cycle"] = memory_of(proc.pid)
            if cycles > 1:
                time.sleep(settle)
                readings[f"after {cycles} cycles"] = memory_of(proc.pid)
            if proc.poll() is not None:
                raise RuntimeError(f"module exited with {proc.returncode} during the run")
        except BaseException as exc:
            exc.add_note(f"module log and station file kept in {tmp}")
            raise
        else:
            shutil.rmtree(tmp, ignore_errors=True)
        finally:
            stop_module(proc)
            if observer is not None:
                observer.stop()
            if station is not None:
                station.stop()

    worst = max(r["rss_mb"] for r in readings.values())
    growth = None
    if cycles > 1:
        growth = ((readings[f"after {cycles} cycles"]["rss_mb"] - readings["after 1 cycle"]["rss_mb"])
                  / (cycles - 1) * 100)
    return {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform()},
        "module_command": command,
        "auth_module_fingerprint": fingerprint,
        "cycles": cycles,
        "readings": readings,
        "max_rss_mb": worst,
        "rss_growth_mb_per_100_cycles": growth,
        "target": {"rss_mb_limit": TARGET_RSS_MB, "pass": worst < TARGET_RSS_MB},
        "pass": worst < TARGET_RSS_MB,
    }


def report(r: dict[str, Any]) -> str:
    lines = [f"module memory on the demo station ({r['cycles']} charging cycles), "
             f"Python {r['machine']['python']}, auth_module {r['auth_module_fingerprint']}",
             f"{'':<20} {'RSS MB':>8} {'USS MB':>8} {'peak RSS':>9} {'threads':>8}"]
    for name, m in r["readings"].items():
        uss = f"{m['uss_mb']:8.1f}" if m.get("uss_mb") is not None else f"{'n/a':>8}"
        peak = f"{m['peak_rss_mb']:9.1f}" if m.get("peak_rss_mb") is not None else f"{'n/a':>9}"
        lines.append(f"{name:<20} {m['rss_mb']:8.1f} {uss} {peak} {m['threads']:>8}")
    if r["rss_growth_mb_per_100_cycles"] is not None:
        lines.append(f"RSS growth after the first cycle: "
                     f"{r['rss_growth_mb_per_100_cycles']:+.2f} MB per 100 cycles "
                     f"({r['cycles'] * 5} swipes, one new token value per cycle)")
    lines.append(f"{'PASS' if r['pass'] else 'FAIL'}  RSS {r['max_rss_mb']:.1f} MB "
                 f"< {TARGET_RSS_MB:.0f} MB")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    import shlex

    p = argparse.ArgumentParser(prog="python -m bench.memory",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--cycles", type=int, default=200, help="charging cycles (default 200)")
    p.add_argument("--settle", type=float, default=1.0,
                   help="seconds to wait before each reading (default 1)")
    p.add_argument("--json", action="store_true", help="print the results as one JSON object")
    p.add_argument("--module-command", default=None, metavar="CMD",
                   help="how to start the module instead of the auth-module script")
    args = p.parse_args(argv)
    if args.cycles < 1:
        p.error("--cycles must be >= 1")
    quiet_logging()
    command = shlex.split(args.module_command) if args.module_command else None
    return run_and_report("bench.memory", lambda: run(args.cycles, args.settle, command),
                          args.json, report)


if __name__ == "__main__":
    sys.exit(main())
