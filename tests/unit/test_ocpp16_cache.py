"""The ``ocpp16`` validator's pure parts: idTagInfo mapping, the authorization cache, the
local list, the offline decision table and the options. No network, no threads, no sleeps:
time is an injected clock."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from auth_module.plugins.base import PluginContext
from auth_module.plugins.ocpp16 import (
    AuthorizationCache,
    IdTagInfo,
    LocalList,
    Ocpp16Options,
    OptionError,
    create,
    offline_decision,
    parse_id_tag_info,
)
from auth_module.types import AuthorizationStatus, IdToken, IdTokenType

pytestmark = pytest.mark.timeout(10)

S = AuthorizationStatus
T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


# --------------------------------------------------------------------------- idTagInfo


@pytest.mark.parametrize("status", ["Accepted", "Blocked", "Expired", "Invalid",
                                    "ConcurrentTx"])
def test_every_ocpp16_status_maps_to_the_same_authorization_status(status):
    info = parse_id_tag_info({"status": status})
    assert info.status == AuthorizationStatus(status)
    result = info.to_result()
    assert result.authorization_status == AuthorizationStatus(status)
    assert result.expiry_time is None and result.parent_id_token is None


def test_expiry_and_parent_are_mapped():
    info = parse_id_tag_info({"status": "Accepted", "expiry_date": "2027-03-04T05:06:07+02:00",
                              "parent_id_tag": "PARENT_1"})
    assert info.expiry == datetime(2027, 3, 4, 3, 6, 7, tzinfo=UTC)
    result = info.to_result()
    assert result.expiry_time == "2027-03-04T03:06:07.000Z"
    assert result.parent_id_token == IdToken(value="PARENT_1", type=IdTokenType.Central)


@pytest.mark.parametrize("text, expected", [
    ("2027-01-01T00:00:00Z", datetime(2027, 1, 1, tzinfo=UTC)),
    ("2027-01-01T00:00:00.250Z", datetime(2027, 1, 1, 0, 0, 0, 250000, tzinfo=UTC)),
    ("2027-01-01T00:00:00", datetime(2027, 1, 1, tzinfo=UTC)),  # no offset: UTC
])
def test_expiry_date_forms(text, expected):
    assert parse_id_tag_info({"status": "Accepted", "expiry_date": text}).expiry == expected


def test_unreadable_expiry_is_passed_on_without_it_and_not_cacheable():
    info = parse_id_tag_info({"status": "Accepted", "expiry_date": "next tuesday"})
    assert info.status == S.Accepted and info.expiry is None and not info.cacheable


@pytest.mark.parametrize("payload", [{}, {"status": "Maybe"}, {"status": "NoCredit"}, "x"])
def test_unusable_idtaginfo_is_refused(payload):
    with pytest.raises(ValueError):
        parse_id_tag_info(payload)


def test_effective_status_honours_expiry():
    info = IdTagInfo(S.Accepted, expiry=T0)
    assert info.effective_status(T0 - timedelta(seconds=1)) == S.Accepted
    assert info.effective_status(T0) == S.Expired
    assert IdTagInfo(S.Blocked, expiry=T0).effective_status(T0 + timedelta(days=1)) == S.Blocked


# --------------------------------------------------------------------------- cache


def test_accepted_answers_are_cached_case_insensitively():
    cache = AuthorizationCache(Clock())
    cache.update("Card_1", IdTagInfo(S.Accepted, parent_id_tag="P"))
    assert cache.lookup("CARD_1") == IdTagInfo(S.Accepted, parent_id_tag="P")
    assert cache.lookup("card_1") is not None
    assert cache.lookup("other") is None


@pytest.mark.parametrize("status", [S.Blocked, S.Expired, S.Invalid])
def test_rejecting_answers_replace_the_entry(status):
    cache = AuthorizationCache(Clock())
    cache.update("CARD", IdTagInfo(S.Accepted))
    cache.update("CARD", IdTagInfo(status))
    assert cache.lookup("CARD") == IdTagInfo(status)


def test_concurrent_tx_leaves_the_entry_alone():
    cache = AuthorizationCache(Clock())
    cache.update("CARD", IdTagInfo(S.Accepted, parent_id_tag="P"))
    cache.update("CARD", IdTagInfo(S.ConcurrentTx))
    assert cache.lookup("CARD") == IdTagInfo(S.Accepted, parent_id_tag="P")
    cache.update("NEW", IdTagInfo(S.ConcurrentTx))
    assert cache.lookup("NEW") is None


def test_an_answer_with_unreadable_expiry_removes_the_entry():
    cache = AuthorizationCache(Clock())
    cache.update("CARD", IdTagInfo(S.Accepted))
    cache.update("CARD", IdTagInfo(S.Accepted, cacheable=False))
    assert cache.lookup("CARD") is None


def test_cached_accepted_entry_expires_with_the_clock():
    clock = Clock()
    cache = AuthorizationCache(clock)
    cache.update("CARD", IdTagInfo(S.Accepted, expiry=T0 + timedelta(hours=1)))
    assert cache.lookup("CARD").effective_status(clock()) == S.Accepted
    clock.advance(3600)
    assert cache.lookup("CARD").effective_status(clock()) == S.Expired


def test_full_cache_drops_invalid_entries_first_then_the_oldest():
    clock = Clock()
    cache = AuthorizationCache(clock, max_entries=3)
    cache.update("A", IdTagInfo(S.Accepted))
    cache.update("B", IdTagInfo(S.Blocked))
    cache.update("C", IdTagInfo(S.Accepted))
    cache.update("D", IdTagInfo(S.Accepted))
    assert [t for t in "ABCD" if cache.lookup(t)] == ["A", "C", "D"]
    cache.update("E", IdTagInfo(S.Accepted))
    assert [t for t in "ACDE" if cache.lookup(t)] == ["C", "D", "E"]
    assert len(cache) == 3


def test_cache_file_round_trip(tmp_path):
    path = tmp_path / "cache.json"
    cache = AuthorizationCache(Clock(), path)
    cache.update("Card_1", IdTagInfo(S.Accepted, expiry=T0, parent_id_tag="P"))
    cache.update("CARD_2", IdTagInfo(S.Blocked))
    again = AuthorizationCache(Clock(), path)
    assert again.lookup("card_1") == IdTagInfo(S.Accepted, expiry=T0, parent_id_tag="P")
    assert again.lookup("card_2") == IdTagInfo(S.Blocked)
    cache.remove("CARD_2")
    assert AuthorizationCache(Clock(), path).lookup("CARD_2") is None


def test_cache_file_is_written_only_on_change(tmp_path):
    path = tmp_path / "cache.json"
    cache = AuthorizationCache(Clock(), path)
    cache.update("CARD", IdTagInfo(S.Accepted))
    path.write_text("a marker")
    cache.update("card", IdTagInfo(S.Accepted))  # same answer again: no write
    assert path.read_text() == "a marker"


def test_cache_file_holds_no_token_value(tmp_path):
    path = tmp_path / "cache.json"
    cache = AuthorizationCache(Clock(), path)
    cache.update("Card_Qzx_1", IdTagInfo(S.Accepted, parent_id_tag="Group_Wvk"))
    text = path.read_text().lower()
    assert "card_qzx" not in text and "group_wvk" not in text
    assert json.loads(text)["version"] == 2


def test_cache_file_in_clear_is_rewritten_sealed(tmp_path):
    path = tmp_path / "cache.json"
    path.write_text(json.dumps({"version": 1, "entries": [
        {"id_tag": "Card_Qzx_1", "status": "Accepted", "expiry": None,
         "parent_id_tag": "Group_Wvk"}]}))
    cache = AuthorizationCache(Clock(), path)
    assert cache.lookup("CARD_QZX_1") == IdTagInfo(S.Accepted, parent_id_tag="Group_Wvk")
    assert "card_qzx" not in path.read_text().lower()
    assert AuthorizationCache(Clock(), path).lookup("card_qzx_1") is not None


def test_cache_file_sealed_under_another_key_starts_empty(tmp_path):
    from auth_module import privacy

    path = tmp_path / "cache.json"
    AuthorizationCache(Clock(), path).update("CARD", IdTagInfo(S.Accepted))
    before = privacy.current()
    privacy.install(privacy.TokenPrivacy(bytes(32)))
    try:
        assert len(AuthorizationCache(Clock(), path)) == 0
    finally:
        privacy.install(before)


@pytest.mark.parametrize("content", ["not json", '{"entries": [{"id_tag": "X"}]}', "[]"])
def test_broken_cache_file_starts_empty(tmp_path, content):
    path = tmp_path / "cache.json"
    path.write_text(content)
    assert len(AuthorizationCache(Clock(), path)) == 0


# --------------------------------------------------------------------------- local list


LOCAL_YAML = """\
tokens:
  - id_token: LOCAL_OK
    evse_ids: [1, 2]
    parent_id_token: GROUP
  - id_token: local_blocked
    status: Blocked
  - id_token: LOCAL_OLD
    expiry: 2025-01-01T00:00:00Z
"""


def test_local_list_maps_allow_list_entries(tmp_path):
    path = tmp_path / "local.yaml"
    path.write_text(LOCAL_YAML)
    local = LocalList(path)
    assert local.lookup("Local_Ok") == IdTagInfo(S.Accepted, parent_id_tag="GROUP",
                                                 evse_ids=(1, 2))
    assert local.lookup("LOCAL_BLOCKED") == IdTagInfo(S.Blocked)
    assert local.lookup("local_old") == IdTagInfo(S.Accepted,
                                                  expiry=datetime(2025, 1, 1, tzinfo=UTC))
    assert local.lookup("nobody") is None


def test_local_list_may_be_csv(tmp_path):
    path = tmp_path / "local.csv"
    path.write_text("id_token,status,evse_ids\nCSV_1,Blocked,\nCSV_2,,2\n")
    local = LocalList(path)
    assert local.lookup("csv_1") == IdTagInfo(S.Blocked)
    assert local.lookup("csv_2") == IdTagInfo(S.Accepted, evse_ids=(2,))


def test_local_list_reloads_on_change_and_keeps_the_last_good_list(tmp_path):
    path = tmp_path / "local.yaml"
    path.write_text("tokens:\n  - id_token: A\n")
    local = LocalList(path)
    assert local.lookup("a") is not None
    path.write_text("tokens:\n  - id_token: A\n  - id_token: BB\n")
    assert local.lookup("BB") is not None  # size changed: read again
    path.write_text("tokens: [oops\n")
    assert local.lookup("BB") is not None  # broken edit: the last good list
    path.unlink()
    assert local.lookup("A") is not None


@pytest.mark.parametrize("content", [None, "tokens: [oops\n",
                                     "tokens:\n  - id_token: A\n    stauts: Blocked\n"])
def test_local_list_unusable_at_start_is_an_option_error(tmp_path, content):
    path = tmp_path / "local.yaml"
    if content is not None:
        path.write_text(content)
    with pytest.raises(OptionError) as caught:
        LocalList(path)
    assert caught.value.option == "local_list"
    assert isinstance(caught.value, ValueError)
    assert "\n" not in str(caught.value)


# --------------------------------------------------------------------------- offline table

VALID = IdTagInfo(S.Accepted, expiry=T0 + timedelta(days=1), parent_id_tag="P")
EXPIRED = IdTagInfo(S.Accepted, expiry=T0 - timedelta(seconds=1))
BLOCKED = IdTagInfo(S.Blocked)
U, A, E, B = S.Unknown, S.Accepted, S.Expired, S.Blocked

# (local_authorize_offline, allow_offline_tx_for_unknown_id) ->
#     answer for: cached valid, unknown, cached expired, cached blocked
TABLE = {
    (True, False): (A, U, E, B),
    (True, True): (A, A, E, B),
    (False, False): (U, U, E, B),
    (False, True): (A, A, E, B),
}


@pytest.mark.parametrize("lao, allow", list(TABLE))
@pytest.mark.parametrize("column, cached", [(0, VALID), (1, None), (2, EXPIRED), (3, BLOCKED)],
                         ids=["cached", "unknown", "expired-cached", "blocked-cached"])
def test_offline_decision_table(lao, allow, column, cached):
    result, rule = offline_decision(local=None, cached=cached, now=T0,
                                    local_authorize_offline=lao,
                                    allow_offline_tx_for_unknown_id=allow)
    assert result.authorization_status == TABLE[(lao, allow)][column]
    if cached is VALID and lao:
        # the cached idTagInfo comes with it
        assert rule == "cache"
        assert result.parent_id_token == IdToken(value="P", type=IdTokenType.Central)
        assert result.expiry_time == "2026-01-02T12:00:00.000Z"
    elif cached is None or (cached is VALID and not lao):
        assert rule == ("unknown-allowed" if allow else "unknown")
        assert result.parent_id_token is None and result.expiry_time is None


def test_local_list_takes_precedence_over_the_cache():
    for local, cached, expected in [(BLOCKED, VALID, B), (VALID, BLOCKED, A),
                                    (EXPIRED, VALID, E)]:
        result, rule = offline_decision(local=local, cached=cached, now=T0,
                                        local_authorize_offline=True,
                                        allow_offline_tx_for_unknown_id=True)
        assert (result.authorization_status, rule) == (expected, "local-list")


def test_local_list_entry_brings_its_evse_ids():
    result, _ = offline_decision(local=IdTagInfo(S.Accepted, evse_ids=(2,)), cached=None,
                                 now=T0, local_authorize_offline=True,
                                 allow_offline_tx_for_unknown_id=False)
    assert result.evse_ids == [2]


# --------------------------------------------------------------------------- options


GOOD = {"csms_url": "ws://127.0.0.1:9000/ocpp/", "charge_point_id": "CP001"}


def test_option_defaults():
    o = Ocpp16Options.model_validate(GOOD)
    assert o.csms_url == "ws://127.0.0.1:9000/ocpp"  # trailing slash dropped
    assert (o.timeout_s, o.local_authorize_offline, o.allow_offline_tx_for_unknown_id,
            o.reconnect_max_s, o.cache_file, o.local_list) == (5.0, True, False, 30.0,
                                                              None, None)


@pytest.mark.parametrize("change, field", [
    ({"csms_url": "http://host/ocpp"}, "csms_url"),
    ({"csms_url": "ws:///ocpp"}, "csms_url"),
    ({"csms_url": "ws://host/ocpp?x=1"}, "csms_url"),
    ({"charge_point_id": "CP/1"}, "charge_point_id"),
    ({"charge_point_id": ""}, "charge_point_id"),
    ({"timeout_s": 0}, "timeout_s"),
    ({"timeout_s": -1}, "timeout_s"),
    ({"reconnect_max_s": 0}, "reconnect_max_s"),
    ({"timeot_s": 3}, "timeot_s"),
])
def test_bad_options_name_the_option(change, field):
    with pytest.raises(ValidationError, match=field):
        Ocpp16Options.model_validate({**GOOD, **change})


def test_create_refuses_bad_files_before_starting(tmp_path):
    ctx = PluginContext(base_dir=tmp_path)
    before = threading.active_count()
    with pytest.raises(OptionError, match="missing.yaml") as caught:
        create({**GOOD, "local_list": "missing.yaml"}, ctx)
    assert caught.value.option == "local_list"
    with pytest.raises(OptionError, match="does not exist") as caught:
        create({**GOOD, "cache_file": "no/such/dir/cache.json"}, ctx)
    assert caught.value.option == "cache_file"
    with pytest.raises(ValueError, match="csms_url"):
        create({"charge_point_id": "CP001"}, ctx)
    assert threading.active_count() == before  # no loop thread left behind


def test_bad_options_are_a_value_error(tmp_path):
    # the loader catches ValueError; pydantic's ValidationError is one
    with pytest.raises(ValueError):
        create({**GOOD, "bogus": 1}, PluginContext(base_dir=Path(tmp_path)))
