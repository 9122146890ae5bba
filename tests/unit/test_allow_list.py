"""The allow_list validator: YAML and CSV files, expiry, parent, evse ids, case, reloads."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from auth_module.plugins import allow_list
from auth_module.plugins.allow_list import (
    AllowListValidator,
    TokensFile,
    TokensFileError,
    load_tokens,
    parse_csv,
)
from auth_module.plugins.base import PluginContext
from auth_module.plugins.loader import PluginError
from auth_module.types import (
    AuthorizationStatus,
    AuthorizationType,
    IdToken,
    IdTokenType,
    ProvidedIdToken,
)

pytestmark = pytest.mark.timeout(10)

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)

YAML = """\
tokens:
  - id_token: VALID_RFID_1
    status: Accepted
    parent_id_token: PARENT_RFID
  - id_token: valid_rfid_2
  - id_token: BLOCKED_RFID
    status: Blocked
  - id_token: OLD_RFID
    expiry: 2026-01-01T00:00:00Z
  - id_token: FUTURE_RFID
    expiry: 2027-01-01T00:00:00Z
    evse_ids: [1, 2]
  - id_token: BLOCKED_AND_OLD
    status: Blocked
    expiry: 2020-01-01
"""

CSV = """\
# tokens of the depot; evse ids separated by spaces or semicolons
id_token,status,expiry,parent_id_token,evse_ids
VALID_RFID_1,Accepted,,PARENT_RFID,
valid_rfid_2,,,,
BLOCKED_RFID,Blocked,,,
OLD_RFID,,2026-01-01T00:00:00Z,,
FUTURE_RFID,Accepted,2027-01-01T00:00:00Z,,1 2
SEMI_RFID,Accepted,,,2;3
"""


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def token(value: str) -> ProvidedIdToken:
    return ProvidedIdToken(id_token=IdToken(value=value, type=IdTokenType.ISO14443),
                           authorization_type=AuthorizationType.RFID)


def validator_for(path: Path, clock: FakeClock | None = None,
                  interval_s: float = 0.0) -> AllowListValidator:
    tokens_file = TokensFile(path, interval_s=interval_s, clock=clock or FakeClock())
    tokens_file.load()
    return AllowListValidator(tokens_file, now=lambda: NOW)


def status(v: AllowListValidator, value: str) -> AuthorizationStatus:
    return v.validate(token(value)).authorization_status


@pytest.fixture(params=["yaml", "csv"])
def any_format(request: pytest.FixtureRequest, tmp_path: Path) -> AllowListValidator:
    if request.param == "yaml":
        path = tmp_path / "tokens.yaml"
        path.write_text(YAML)
    else:
        path = tmp_path / "tokens.csv"
        path.write_text(CSV)
    return validator_for(path)


def test_statuses(any_format: AllowListValidator) -> None:
    v = any_format
    assert status(v, "VALID_RFID_1") == AuthorizationStatus.Accepted
    assert status(v, "VALID_RFID_2") == AuthorizationStatus.Accepted  # status defaults
    assert status(v, "BLOCKED_RFID") == AuthorizationStatus.Blocked
    assert status(v, "NOBODY") == AuthorizationStatus.Unknown  # not in the list


def test_case_insensitive(any_format: AllowListValidator) -> None:
    assert status(any_format, "valid_rfid_1") == AuthorizationStatus.Accepted
    assert status(any_format, "Valid_Rfid_2") == AuthorizationStatus.Accepted


def test_expiry(any_format: AllowListValidator) -> None:
    old = any_format.validate(token("OLD_RFID"))
    assert old.authorization_status == AuthorizationStatus.Expired
    assert old.expiry_time == "2026-01-01T00:00:00Z"
    future = any_format.validate(token("future_rfid"))
    assert future.authorization_status == AuthorizationStatus.Accepted
    assert future.expiry_time == "2027-01-01T00:00:00Z"


def test_expiry_against_the_wall_clock(tmp_path: Path) -> None:
    path = tmp_path / "tokens.yaml"
    path.write_text(YAML)
    tokens_file = TokensFile(path, interval_s=0)
    tokens_file.load()
    later = AllowListValidator(tokens_file, now=lambda: datetime(2027, 1, 1, tzinfo=UTC))
    assert status(later, "FUTURE_RFID") == AuthorizationStatus.Expired  # at the expiry: over
    assert status(later, "BLOCKED_AND_OLD") == AuthorizationStatus.Expired


def test_parent(any_format: AllowListValidator) -> None:
    result = any_format.validate(token("VALID_RFID_1"))
    assert result.parent_id_token == IdToken(value="PARENT_RFID", type=IdTokenType.ISO14443)
    assert any_format.validate(token("VALID_RFID_2")).parent_id_token is None


def test_evse_ids(any_format: AllowListValidator) -> None:
    assert any_format.validate(token("FUTURE_RFID")).evse_ids == [1, 2]
    assert any_format.validate(token("VALID_RFID_1")).evse_ids is None


def test_csv_semicolon_separated_evse_ids(tmp_path: Path) -> None:
    path = tmp_path / "tokens.csv"
    path.write_text(CSV)
    assert validator_for(path).validate(token("semi_rfid")).evse_ids == [2, 3]


def test_csv_with_only_some_columns_in_any_order(tmp_path: Path) -> None:
    tokens = parse_csv("status,id_token\nBlocked,AA01\n,AA02\n")
    assert tokens["aa01"].status == AuthorizationStatus.Blocked
    assert tokens["aa02"].status == AuthorizationStatus.Accepted


@pytest.mark.parametrize(("text", "where"), [
    ("id_token,colour\nAA,red\n", "line 1: unknown column 'colour'"),
    ("status\nAccepted\n", "no id_token column"),
    ("id_token,status\nAA,Maybe\n", "line 2: status: 'Maybe' is not an AuthorizationStatus"),
    ("id_token,expiry\nAA,soon\n", "line 2: expiry: not an RFC 3339 time"),
    ("id_token,evse_ids\nAA,one two\n", "line 2: evse_ids"),
    ("id_token,status\nAA,Accepted,extra\n", "line 2: 3 cells for 2 columns"),
    ("# c\nid_token\nAA\naa\n", "line 4: id_token: 'aa' is listed twice (also at line 3)"),
])
def test_csv_errors_name_the_line(text: str, where: str) -> None:
    with pytest.raises(TokensFileError) as err:
        parse_csv(text, "t.csv")
    assert str(err.value).startswith("t.csv: ")
    assert where in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(("text", "where"), [
    ("tokens:\n  - id_token: AA\n    colour: red\n", "tokens[0]: unknown key 'colour'"),
    ("tokens:\n  - status: Accepted\n", "tokens[0].id_token: required"),
    ("tokens:\n  - id_token: AA\n    evse_ids: 1\n", "tokens[0].evse_ids"),
    ("tokens:\n  - id_token: AA\n  - id_token: aa\n", "tokens[1].id_token: 'aa' is listed twice"),
    ("tokens: [\n", "invalid YAML"),
    ("token:\n  - id_token: AA\n", "unknown key 'token'"),
])
def test_yaml_errors_name_the_key(tmp_path: Path, text: str, where: str) -> None:
    path = tmp_path / "tokens.yaml"
    path.write_text(text)
    with pytest.raises(TokensFileError) as err:
        load_tokens(path)
    assert where in str(err.value) and "\n" not in str(err.value)


def test_format_option_overrides_the_file_name(tmp_path: Path) -> None:
    path = tmp_path / "tokens.txt"
    path.write_text("id_token\nAA01\n")
    assert set(load_tokens(path, "csv")) == {"aa01"}


def test_reload_on_change_at_most_every_interval(tmp_path: Path) -> None:
    path = tmp_path / "tokens.yaml"
    path.write_text("tokens:\n  - id_token: AA01\n")
    clock = FakeClock()
    v = validator_for(path, clock, interval_s=5.0)
    assert status(v, "AA01") == AuthorizationStatus.Accepted

    path.write_text("tokens:\n  - id_token: AA01\n    status: Blocked\n  - id_token: BB02\n")
    clock.t += 1.0  # not looked at yet
    assert status(v, "AA01") == AuthorizationStatus.Accepted
    clock.t += 5.0
    assert status(v, "AA01") == AuthorizationStatus.Blocked
    assert status(v, "BB02") == AuthorizationStatus.Accepted
    assert v.file.loads == 2


def test_reload_sees_a_same_size_edit(tmp_path: Path) -> None:
    path = tmp_path / "tokens.csv"
    path.write_text("id_token,status\nAA01,Blocked\n")
    v = validator_for(path)
    before = path.stat().st_mtime_ns
    path.write_text("id_token,status\nAA01,Expired\n")  # same size
    os.utime(path, ns=(before + 1_000_000_000, before + 1_000_000_000))
    assert status(v, "AA01") == AuthorizationStatus.Expired


def test_broken_edit_keeps_the_last_good_list_and_says_why_once(tmp_path: Path) -> None:
    path = tmp_path / "tokens.yaml"
    path.write_text("tokens:\n  - id_token: AA01\n")
    v = validator_for(path)
    with capture_logs() as logs:
        path.write_text("tokens:\n  - id_token: AA01\n    status: Maybe\n")
        for _ in range(3):
            assert status(v, "AA01") == AuthorizationStatus.Accepted
    warnings = [e["event"] for e in logs if e["log_level"] == "warning"]
    assert len(warnings) == 1
    assert "keeping the last good list of 1 tokens" in warnings[0]
    assert "tokens[0].status: 'Maybe' is not an AuthorizationStatus" in warnings[0]
    assert "\n" not in warnings[0]

    path.write_text("tokens:\n  - id_token: AA01\n    status: Blocked\n")  # fixed
    assert status(v, "AA01") == AuthorizationStatus.Blocked


def test_deleted_file_keeps_the_last_good_list(tmp_path: Path) -> None:
    path = tmp_path / "tokens.yaml"
    path.write_text("tokens:\n  - id_token: AA01\n")
    v = validator_for(path)
    path.unlink()
    with capture_logs() as logs:
        assert status(v, "AA01") == AuthorizationStatus.Accepted
        assert status(v, "AA01") == AuthorizationStatus.Accepted
    assert len([e for e in logs if e["log_level"] == "warning"]) == 1


def test_create_resolves_relative_paths_against_the_station_file(tmp_path: Path) -> None:
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "tokens.csv").write_text("id_token\nAA01\n")
    v = allow_list.create({"file": "lists/tokens.csv"}, PluginContext(base_dir=tmp_path))
    assert v.file.path == tmp_path / "lists" / "tokens.csv"
    assert status(v, "aa01") == AuthorizationStatus.Accepted
    assert v.name == "allow_list:tokens.csv"


def test_create_refuses_a_missing_or_broken_file(tmp_path: Path) -> None:
    with pytest.raises(PluginError) as err:
        allow_list.create({"file": "nope.yaml"}, PluginContext(base_dir=tmp_path))
    assert err.value.option == "file" and "file not found" in str(err.value)
    (tmp_path / "bad.yaml").write_text("tokens: 3\n")
    with pytest.raises(PluginError) as err:
        allow_list.create({"file": "bad.yaml"}, PluginContext(base_dir=tmp_path))
    assert "tokens: must be a list" in str(err.value)


def test_the_demo_tokens_file_and_the_simulator_share_the_parser() -> None:
    from simulators import validator as sim

    assert sim.load_tokens is allow_list.load_tokens
    tokens = allow_list.create({"file": "tokens.yaml"}, PluginContext(base_dir=ROOT / "config"))
    assert status(tokens, "master_rfid") == AuthorizationStatus.Accepted
    assert status(tokens, "BLOCKED_RFID") == AuthorizationStatus.Blocked
