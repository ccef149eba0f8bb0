"""The browser page through dropped connections, run as a script INSIDE a loopback-only network namespace.

``tests/e2e/test_server_browser.py`` runs ``ip netns exec NS python this.py``. We start ``bridge emulate``
(script behaviour) and ``bridge serve`` against it, drive Debian's Chromium through a typed turn, then break
the connection with the emulator's admin API (docs/emulator.md "Faults"): a ``drop`` while the service
refuses new keys for 2 s (the page must retry with backoff), a ``stall`` (nothing closes; only the inbound
audio stops), and a drop during which the access token goes bad (401: no retry, a clear failure). After
each recoverable fault the page must say Reconnecting…, come back on a NEW session that was told the
conversation (the emulator reports the session's context), keep every earlier transcript line in order
with a "reconnected in N ms" marker, and answer the next turn.
Exit status 0 means every step passed; otherwise the last line says which step failed.
"""

from __future__ import annotations

import re
import sys
import time
from typing import Any

from browser_flow import STEP_TIMEOUT_MS, WATCH_STATES, Run, Servers, admin, run_flow, step, transcript_turn
from playwright.sync_api import Page, expect

EMU_PORT = 8767
SERVE_PORT = 8082
ACCESS_TOKEN = "e2e-reconnect-token"
DETECT_LIMIT_S = 4.0  # the page's target is 3 s (2.5 s without inbound audio + a 250 ms poll); the rest is
# slack for the admin round trip and a busy 2-core box (measured 2.6-3.0 s from here)
SCRIPT = {"turns": [{"text": "Noted, thank you.", "seconds": 0.5}, {"text": "Still here.", "seconds": 0.5}]}


SERVERS = Servers(
    "reconnect-",
    EMU_PORT,
    SERVE_PORT,
    SCRIPT,
    serve_args=("--access-token", ACCESS_TOKEN, "--rate-burst", "50", "--rate-period", "0.1"),
)


def sessions() -> list[dict[str, Any]]:
    return list(admin(EMU_PORT, "sessions")["sessions"])


def new_session(known: set[str]) -> dict[str, Any]:
    """The one open session that is not in ``known`` (a stalled one may still be listed)."""
    fresh = [s for s in sessions() if s["id"] not in known]
    assert len(fresh) == 1, fresh
    return fresh[0]


def state_becomes(page: Page, state: str, timeout_ms: float = STEP_TIMEOUT_MS) -> None:
    expect(page.locator("#state")).to_have_attribute("data-state", state, timeout=timeout_ms)


def rows(page: Page) -> list[tuple[str, str]]:
    """The transcript drawer's rows: (class, text), in order."""
    script = "els => els.map(e => [e.className, e.querySelector('.turn-text').textContent])"
    return [(c, t) for c, t in page.locator("#transcript li").evaluate_all(script)]


def say(page: Page, text: str, replies_before: int) -> None:
    """Type a turn; wait for its whole reply (one more assistant row than before, its item completed: a
    row shows the transcript as it streams, so text alone may be half a sentence)."""
    page.fill("#text", text)
    page.press("#text", "Enter")
    transcript_turn(page, "user", text)
    done = page.locator("#transcript li.turn-assistant")
    expect(done).to_have_count(replies_before + 1, timeout=STEP_TIMEOUT_MS)
    expect(done.last.locator(".meta")).to_have_text(re.compile(r"completed$"), timeout=STEP_TIMEOUT_MS)


def detect(page: Page, fault: dict[str, Any]) -> float:
    """Inject ``fault``; seconds until the page says Reconnecting… (every header change is recorded, so a
    reconnect quicker than our polling is still seen)."""
    page.evaluate("window.seenStates.length = 0")
    t0 = time.monotonic()
    admin(EMU_PORT, "faults", fault)
    said = "window.seenStates.some(([s, t]) => s === 'reconnecting' && t.startsWith('Reconnecting…'))"
    page.wait_for_function(f"() => {said}", polling=20, timeout=6000)
    return time.monotonic() - t0


def replayed(session: dict[str, Any], *said: str) -> None:
    """The new session's context holds our replay: one system message quoting the earlier turns."""
    system = [i["text"] for i in session["items"] if i["role"] == "system"]
    assert len(system) == 1, session["items"]
    for words in said:
        assert f"User: {words}" in system[0], system[0]
    assert "Assistant: Noted, thank you." in system[0], system[0]


def marker(page: Page, n: int) -> str:
    marks = page.locator("#transcript li.turn-reconnect")
    expect(marks).to_have_count(n, timeout=STEP_TIMEOUT_MS)
    text = marks.nth(n - 1).text_content() or ""
    assert re.search(r"reconnected in \d+ ms", text), text
    return text


def flow(page: Page, servers: Servers, run: Run) -> dict[str, float]:
    measured: dict[str, float] = {}
    page.goto(servers.base)
    page.evaluate(WATCH_STATES)
    step("connect, one typed turn")
    page.fill("#token", ACCESS_TOKEN)
    page.click("#connect")
    state_becomes(page, "live")
    page.click("#menu")
    say(page, "My name is Ada.", 0)
    (first,) = sessions()
    seen = {first["id"]}

    step("drop while the service refuses new keys for 2 s: Reconnecting…, backoff, a new session")
    admin(EMU_PORT, "faults", {"kind": "refuse", "status": 500, "seconds": 2})
    measured["drop_detect_s"] = detect(page, {"kind": "drop"})
    assert page.evaluate("document.getElementById('remote').srcObject === null"), "playback kept the dead stream"
    expect(page.locator("#text")).to_be_disabled()
    state_becomes(page, "live")
    text = marker(page, 1)
    attempts = int(re.search(r"(\d+) attempts?", text).group(1))  # type: ignore[union-attr]
    assert attempts >= 2, f"refused attempts were not retried: {text}"
    measured["drop_reconnect_ms"] = float(re.search(r"in (\d+) ms", text).group(1))  # type: ignore[union-attr]
    second = new_session(seen)
    seen.add(second["id"])
    assert first["id"] in text and second["id"] in text, text
    replayed(second, "My name is Ada.")

    step("the next turn is answered; the transcript kept every line, in order")
    say(page, "What is my name?", 1)
    kinds = [c.split()[-1] for c, _ in rows(page)]
    assert kinds == ["turn-user", "turn-assistant", "turn-reconnect", "turn-user", "turn-assistant"], rows(page)
    assert rows(page)[0][1] == "My name is Ada." and rows(page)[1][1] == "Noted, thank you.", rows(page)
    expect(page.locator("#transcript li.turn-system")).to_have_count(0)  # the replay is not a turn

    step("stall: nothing closes, the audio stops; noticed within 3 s, reconnected")
    measured["stall_detect_s"] = detect(page, {"kind": "stall", "session": second["id"]})
    assert measured["stall_detect_s"] <= DETECT_LIMIT_S, measured
    state_becomes(page, "live")
    text = marker(page, 2)
    measured["stall_reconnect_ms"] = float(re.search(r"in (\d+) ms", text).group(1))  # type: ignore[union-attr]
    third = new_session(seen)
    seen.add(third["id"])
    replayed(third, "My name is Ada.", "What is my name?")
    say(page, "Are you there?", 2)
    texts = [t for _, t in rows(page)]
    assert texts[0] == "My name is Ada." and texts[3] == "What is my name?" and texts[-2] == "Are you there?", texts

    step("a refused access token while reconnecting: no retry, a clear failure")
    admin(EMU_PORT, "faults", {"kind": "refuse", "status": 500, "seconds": 3})
    detect(page, {"kind": "drop"})
    page.evaluate("document.getElementById('token').value = 'revoked-token'")
    t0 = time.monotonic()
    state_becomes(page, "failed", 8000)
    measured["fatal_stop_s"] = time.monotonic() - t0
    expect(page.locator("#error-list")).to_contain_text("access token was refused")
    expect(page.locator("#connect")).to_be_enabled()
    failed_attempts = page.locator('#log li[data-type="transport.attempt_failed"]').count()
    page.wait_for_timeout(1500)  # a retry would come within the backoff's 1 s ceiling at this point
    assert page.locator('#log li[data-type="transport.attempt_failed"]').count() == failed_attempts, "retried a 401"
    assert page.locator("#state").get_attribute("data-state") == "failed"
    page.screenshot(path=str(run.screenshot))
    return measured


if __name__ == "__main__":
    sys.exit(run_flow("reconnect flow", SERVERS, flow))
