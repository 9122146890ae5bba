"""The console page in a real headless Chromium (Debian's ``chromium``, driven by Playwright).

The page loads over HTTPS with the module's self-signed certificate (accepted by the test's
browser context), follows the station live, lets an admin add a card that the module then
accepts on the bus, shows a viewer no admin controls (and the API refuses the viewer's
writes), and logs out a key that is revoked while the page is open.

``CONSOLE_SCREENSHOTS=DIR`` also saves the screenshots used in docs/console.md.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from simulators.broker import Mosquitto

from .console_rig import ConsoleRig, run_keys

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run", "--disable-sync"]
SWIPE_DEADLINE_S = 3.0  # the goal is within a second (typically 0.2-0.4 s); margin for a busy CI
UI_TIMEOUT_MS = 10_000
SHOTS = os.environ.get("CONSOLE_SCREENSHOTS")


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleRig]:
    with Mosquitto() as broker:
        r = ConsoleRig(broker, tmp_path_factory.mktemp("browser"), tokens=[
            {"id_token": "KNOWN_CARD_1", "status": "Accepted", "nickname": "Anna"},
            {"id_token": "FLEET_CARD_7", "status": "Accepted", "nickname": "Van 7",
             "evse_ids": [2]}], console={"demo_controls": True})
        r.write_station()
        r.admin = r.key("ops", "admin")  # type: ignore[attr-defined]
        r.viewer = r.key("watcher", "viewer")  # type: ignore[attr-defined]
        try:
            yield r.start()
        finally:
            r.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.skip("chromium is not installed (scripts/setup.sh installs it)")
    from playwright.sync_api import sync_playwright  # noqa: PLC0415 - only where chromium is

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page_for(browser: Any, rig: ConsoleRig) -> Iterator[Any]:
    contexts: list[Any] = []

    def open_page(key: str, width: int = 1100) -> Any:
        context = browser.new_context(ignore_https_errors=True,
                                      viewport={"width": width, "height": 900})
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(UI_TIMEOUT_MS)
        page.goto(rig.url + "/")
        page.fill("#key", key)
        page.click("#login-button")
        page.wait_for_selector("#evses .evse[data-evse='2']")
        page.wait_for_selector("#link.up")
        return page

    yield open_page
    for context in contexts:
        context.close()


def shot(page: Any, name: str) -> None:
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SHOTS) / name), full_page=False)


def test_page_loads_over_https_and_a_swipe_appears_live(rig: ConsoleRig, page_for: Any) -> None:
    page = page_for(rig.viewer)  # type: ignore[attr-defined]
    assert page.url.startswith("https://")
    assert page.inner_text("#whoami") == "watcher · viewer"
    label = rig.label("SWIPED_CARD_42")
    started = time.monotonic()
    rig.swipe("SWIPED_CARD_42")
    page.wait_for_selector(f"#recent li:has-text('{label}')",
                           timeout=SWIPE_DEADLINE_S * 1000)
    took = time.monotonic() - started
    item = page.locator("#recent li", has_text=label).first
    item.locator(".reason").wait_for()
    assert item.locator(".reason").inner_text() == "unknown card"
    assert "SWIPED_CARD_42" not in page.content()  # only masked values reach the page
    print(f"swipe on the bus -> on the page: {took * 1000:.0f} ms")


def test_admin_adds_a_card_in_the_form_and_it_is_accepted(rig: ConsoleRig,
                                                          page_for: Any) -> None:
    page = page_for(rig.admin)  # type: ignore[attr-defined]
    page.click("nav button[data-tab='cards']")
    page.wait_for_selector("#al-table tbody tr[data-token='KNOWN_CARD_1']")
    # "register the next card": the next card presented fills the form
    page.click("#al-register")
    page.wait_for_selector("#al-message:has-text('Present the card')")
    time.sleep(0.3)  # the request is on its way to the module
    rig.swipe("NEW_CARD_2024")
    expect(page.locator("#al-id")).to_have_value("NEW_CARD_2024", timeout=UI_TIMEOUT_MS)
    page.fill("#al-nickname", "Carla")
    page.fill("#al-evses", "1 2")
    shot(page, "console-cards.png")
    page.click("#al-save")
    page.wait_for_selector("#al-message:has-text('Saved')")
    page.wait_for_selector("#al-table tbody tr[data-token='NEW_CARD_2024']")
    rig.swipe("NEW_CARD_2024")
    rig.statuses.wait("NEW_CARD_2024", "Accepted")
    page.click("nav button[data-tab='station']")
    page.wait_for_selector("#evses .evse .pending:has-text('Waiting for a car')")
    page.wait_for_selector("#recent li:has-text('Carla')")
    shot(page, "console-station.png")
    # withdraw from the page; the module ends the token as Withdrawn on the bus
    page.locator("#evses .evse[data-evse='1'] button.withdraw").click()
    rig.statuses.wait("NEW_CARD_2024", "Withdrawn")


def test_unknown_recent_card_is_added_with_one_click(rig: ConsoleRig, page_for: Any) -> None:
    page = page_for(rig.admin)  # type: ignore[attr-defined]
    rig.swipe("STRAY_CARD_99")
    page.locator("#recent li", has_text=rig.label("STRAY_CARD_99")).locator(
        "button.add-card").first.click()
    expect(page.locator("#al-id")).to_have_value("STRAY_CARD_99", timeout=UI_TIMEOUT_MS)
    page.click("#al-save")
    page.wait_for_selector("#al-table tbody tr[data-token='STRAY_CARD_99']")


def test_demo_buttons_drive_the_simulators(rig: ConsoleRig, page_for: Any) -> None:
    page = page_for(rig.admin, width=400)  # type: ignore[attr-defined]
    page.wait_for_selector("#demo:not([hidden])")
    page.locator("#evses .evse[data-evse='2'] button.plug-in").click()
    page.wait_for_selector("#evses .evse[data-evse='2'] .state:has-text('Car plugged in')")
    page.fill("#demo-token", "FLEET_CARD_7")
    page.click("#demo-swipe button")
    page.wait_for_selector("#evses .evse[data-evse='2'] .state:has-text('Charging')")
    time.sleep(1.0)  # some energy on the meter for the history
    shot(page, "console-phone.png")
    page.click("nav button[data-tab='history']")
    page.wait_for_selector("#history details:has-text('Van 7')")
    page.locator("#evses .evse[data-evse='2'] button.plug-out").count()
    page.click("nav button[data-tab='station']")
    page.locator("#evses .evse[data-evse='2'] button.plug-out").click()
    page.wait_for_selector("#evses .evse[data-evse='2'] .state:has-text('Free')")
    page.click("nav button[data-tab='history']")
    page.wait_for_selector("#history td.energy:has-text('Wh')")
    shot(page, "console-history.png")


def test_viewer_sees_no_admin_controls_and_its_writes_get_403(rig: ConsoleRig,
                                                              page_for: Any) -> None:
    page = page_for(rig.viewer)  # type: ignore[attr-defined]
    rig.swipe("KNOWN_CARD_1")
    page.wait_for_selector("#recent li:has-text('Anna')")
    for selector in ("#al-editor", "nav button[data-tab='keys']", "#demo", "button.withdraw",
                     "button.add-card", "button.plug-in", "button.revoke"):
        assert not page.locator(selector).first.is_visible() if page.locator(selector).count() \
            else True, selector
    page.click("nav button[data-tab='cards']")
    page.wait_for_selector("#al-table tbody tr[data-token='KNOWN_CARD_1']")
    assert page.locator("#al-table button").count() == 0
    statuses = page.evaluate("""async () => {
        const key = localStorage.getItem('auth-module-console-key');
        const h = {Authorization: 'Bearer ' + key, 'Content-Type': 'application/json'};
        const calls = [['PUT', '/api/v1/allow-list/VIEWER_CARD', '{}'],
                       ['DELETE', '/api/v1/allow-list/KNOWN_CARD_1', null],
                       ['POST', '/api/v1/evses/1/withdraw', null],
                       ['DELETE', '/api/v1/reservations/1', null],
                       ['POST', '/api/v1/keys', '{"name":"x","role":"admin"}']];
        const out = [];
        for (const [m, p, b] of calls) out.push((await fetch(p, {method: m, headers: h, body: b})).status);
        return out;
    }""")
    assert statuses == [403, 403, 403, 403, 403]


def test_a_revoked_key_is_logged_out(rig: ConsoleRig, page_for: Any) -> None:
    key = rig.key("visitor", "viewer")
    page = page_for(key)
    out = run_keys(rig.station_path, "revoke", "visitor")
    assert out.returncode == 0, out.stderr
    page.wait_for_selector("#login:not([hidden])")
    assert "revoked" in page.inner_text("#login-error")
    assert page.evaluate("localStorage.getItem('auth-module-console-key')") is None
    assert page.locator("#app").is_hidden()


def test_admin_creates_and_revokes_a_key_in_the_page(rig: ConsoleRig, page_for: Any) -> None:
    page = page_for(rig.admin)  # type: ignore[attr-defined]
    page.click("nav button[data-tab='keys']")
    page.fill("#key-name", "tablet")
    page.select_option("#key-role", "viewer")
    page.click("#key-form button")
    page.wait_for_selector("#key-new:not([hidden])")
    key = page.inner_text("#key-new-value")
    assert key.startswith("amk_")
    assert rig.client(key).get("/api/v1/me").json()["name"] == "tablet"
    page.wait_for_selector("#keys-table tr[data-key='tablet']")
    shot(page, "console-keys.png")
    page.once("dialog", lambda dialog: dialog.accept())
    page.locator("#keys-table tr[data-key='tablet'] button.revoke").click()
    page.wait_for_selector("#keys-table tr[data-key='tablet']", state="detached")
    assert rig.client(key).get("/api/v1/me").status_code == 401
