"""ReservationStore: round trip, atomic replace, and never failing on a bad file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import structlog

from auth_module.store import ReservationStore
from auth_module.types import ConnectorTypeEnum, Reservation

pytestmark = pytest.mark.timeout(10)


def _reservation(rid: int, **extra: object) -> Reservation:
    return Reservation(reservation_id=rid, id_token=f"TOKEN_{rid}",
                       expiry_time="2026-01-01T13:00:00Z", **extra)


ITEMS = [
    (1, _reservation(1, connector_type=ConnectorTypeEnum.cCCS2, parent_id_token="GROUP")),
    (None, _reservation(2)),
]


def test_round_trip(tmp_path: Path) -> None:
    """What is saved is what is loaded, global reservations keeping evse_id None."""
    store = ReservationStore(tmp_path / "r.json")
    assert store.save(ITEMS)
    assert store.load() == ITEMS
    document = json.loads((tmp_path / "r.json").read_text())
    assert document["version"] == 1
    assert document["reservations"][1] == {
        "evse_id": None,
        "reservation": {
            "reservation_id": 2, "id_token": "TOKEN_2", "expiry_time": "2026-01-01T13:00:00Z"
        },
    }


def test_missing_file_is_empty_and_silent(tmp_path: Path) -> None:
    """The first start: no file, no complaint."""
    with structlog.testing.capture_logs() as logs:
        assert ReservationStore(tmp_path / "absent.json").load() == []
    assert logs == []


def test_save_creates_parent_dir_and_leaves_no_temp_files(tmp_path: Path) -> None:
    """The write goes through a temp file that is renamed into place."""
    path = tmp_path / "deep" / "er" / "r.json"
    store = ReservationStore(path)
    assert store.save(ITEMS)
    assert store.save(ITEMS[:1])
    assert store.save([])
    assert sorted(p.name for p in path.parent.iterdir()) == ["r.json"]
    assert store.load() == []


def test_save_replaces_whole_file(tmp_path: Path) -> None:
    """A shorter list after a longer one leaves no trailing bytes behind."""
    store = ReservationStore(tmp_path / "r.json")
    store.save(ITEMS)
    store.save(ITEMS[1:])
    assert store.load() == ITEMS[1:]


@pytest.mark.parametrize(
    "content",
    [
        "{not json",
        "[]",
        '{"version": 2, "reservations": []}',
        '{"version": 1}',
        '{"version": 1, "reservations": [{"evse_id": 1}]}',
        '{"version": 1, "reservations": [{"evse_id": "one", "reservation": {}}]}',
        '{"version": 1, "reservations": [{"evse_id": true, "reservation": {}}]}',
        '{"version": 1, "reservations": [{"evse_id": 1, "reservation": {"reservation_id": 1}}]}',
        b"\xff\xfe\x00garbage",
    ],
)
def test_corrupt_file_is_moved_aside(tmp_path: Path, content: str | bytes) -> None:
    """A file we cannot use: [] , one error line naming path and reason, file set aside."""
    path = tmp_path / "r.json"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    with structlog.testing.capture_logs() as logs:
        assert ReservationStore(path).load() == []
    assert len(logs) == 1
    assert logs[0]["log_level"] == "error"
    assert logs[0]["path"] == str(path)
    assert logs[0]["reason"]
    assert not path.exists()
    aside = list(tmp_path.glob("r.json.corrupt-*"))
    assert len(aside) == 1 and logs[0]["moved_to"] == str(aside[0])
    raw = content if isinstance(content, bytes) else content.encode()
    assert aside[0].read_bytes() == raw
    # And the store works again afterwards.
    store = ReservationStore(path)
    assert store.save(ITEMS) and store.load() == ITEMS


def test_two_corrupt_files_both_kept(tmp_path: Path) -> None:
    """Setting a second bad file aside does not overwrite the first."""
    path = tmp_path / "r.json"
    for _ in range(2):
        path.write_text("{bad")
        assert ReservationStore(path).load() == []
    assert len(list(tmp_path.glob("r.json.corrupt-*"))) == 2


def test_unreadable_path_is_empty_without_exception(tmp_path: Path) -> None:
    """A directory where the file should be: [] and one error line, nothing raised."""
    path = tmp_path / "r.json"
    path.mkdir()
    store = ReservationStore(path)
    with structlog.testing.capture_logs() as logs:
        assert store.load() == []
    assert len(logs) == 1 and logs[0]["log_level"] == "error"
    assert logs[0]["path"] == str(path)
    assert path.is_dir()  # not a file of ours to move


def test_save_failure_is_logged_not_raised(tmp_path: Path) -> None:
    """A save that cannot happen returns False and leaves no temp file."""
    path = tmp_path / "r.json"
    path.mkdir()
    with structlog.testing.capture_logs() as logs:
        assert ReservationStore(path).save(ITEMS) is False
    assert [entry["log_level"] for entry in logs] == ["error"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]


def test_load_removes_temp_files_left_by_a_kill(tmp_path: Path) -> None:
    """A kill during save leaves `.<name>.*.tmp`; the next load clears that litter only."""
    store = ReservationStore(tmp_path / "reservations.json")
    (tmp_path / ".reservations.json.abc123.tmp").write_text("half a write")
    (tmp_path / "other.tmp").write_text("not ours")
    assert store.load() == []
    assert not (tmp_path / ".reservations.json.abc123.tmp").exists()
    assert (tmp_path / "other.tmp").exists()
