"""The browser page before the session cap and through text-only replies, run INSIDE a loopback-only netns.

``tests/e2e/test_server_browser.py`` runs ``ip netns exec NS python this.py``. ``bridge emulate`` caps every
session at 12 s (``--max-session-s``, so ``expires_at`` is ~12 s out and the renewal window opens ~3 s before
it) behind ``bridge serve``; Debian's Chromium drives the page.

1. Renewal, make-before-break: after one typed turn the page must move to a NEW session on its own at a turn
   boundary, before the cap: a "renewed session (old → new)" line, never Reconnecting… nor a drop, the old
   session closed, the new one's context holding the replayed turn, the next turn answered, and the
   microphone's track moved (the same MediaStreamTrack on the new peer connection): the fake microphone
   speaks 13.5 s in, after the old session was closed, and the new session hears it.
2. The text-only trap (docs/emulator.md): with ``?replay=items`` (assistant text items seeded, like
   ``bridge run --replay items``) and the emulator's ``text_only`` fault on, a drop makes the reply after the
   replay come back as text only; the page must delete it and ask again with ``response.create
   {"response": {"output_modalities": ["audio"]}}``, and that reply must be spoken (read from the page's own
   saved event log).
Exit status 0 means every step passed; otherwise the last line says which step failed.
"""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path
from typing import Any

from browser_flow import STEP_TIMEOUT_MS, WATCH_STATES, Run, Servers, admin, run_flow, step, transcript_turn
from playwright.sync_api import Page, expect

EMU_PORT = 8768
SERVE_PORT = 8083
CAP_S = 12
TURN = {"seconds": 0.5}
SCRIPT = {"turns": [{"text": f"Reply number {n}.", **TURN} for n in range(1, 9)]}


SERVERS = Servers(
    "renewal-",
    EMU_PORT,
    SERVE_PORT,
    SCRIPT,
    emulator_args=("--max-session-s", str(CAP_S)),
    serve_args=("--rate-burst", "50", "--rate-period", "0.1"),
)


def sessions() -> list[dict[str, Any]]:
    return list(admin(EMU_PORT, "sessions")["sessions"])


def only_session(session_id: str, within_s: float = 5.0) -> dict[str, Any]:
    """The emulator's one open session, once every other has closed (the page closes the old call; the
    emulator notices its peer going away a moment later)."""
    deadline = time.monotonic() + within_s
    while True:
        open_now = sessions()
        if [s["id"] for s in open_now] == [session_id]:
            return open_now[0]
        if time.monotonic() > deadline:
            raise AssertionError(f"open sessions {[s['id'] for s in open_now]}, expected only {session_id}")
        time.sleep(0.1)


def assistant_rows(page: Page) -> Any:
    return page.locator("#transcript li.turn-assistant")


def say(page: Page, text: str, replies_before: int) -> None:
    """Type a turn; wait for its reply (one more assistant row than before, its whole transcript)."""
    page.fill("#text", text)
    page.press("#text", "Enter")
    transcript_turn(page, "user", text)
    expect(assistant_rows(page)).to_have_count(replies_before + 1, timeout=STEP_TIMEOUT_MS)
    expect(assistant_rows(page).last).to_have_text(re.compile(r"Reply number \d+\.$"), timeout=STEP_TIMEOUT_MS)


def saved_log(page: Page, work: Path) -> list[dict[str, Any]]:
    """The page's event log through its own Save button (JSON Lines)."""
    with page.expect_download() as download:
        page.click("#save-log")
    path = work / "renewal-events.jsonl"
    download.value.save_as(path)
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def renewal(page: Page) -> dict[str, float]:
    measured: dict[str, float] = {}
    page.evaluate(WATCH_STATES)
    step("connect, one typed turn")
    page.click("#connect")
    expect(page.locator("#state")).to_have_attribute("data-state", "live", timeout=STEP_TIMEOUT_MS)
    t_live = time.monotonic()
    page.click("#menu")
    say(page, "My name is Ada.", 0)
    (first,) = sessions()
    assert first["expires_at"] - time.time() <= CAP_S, first

    step(f"renewed before the {CAP_S} s cap, at a turn boundary: a new session, no reconnect, no drop")
    marks = page.locator("#transcript li.turn-renewal")
    expect(marks).to_have_count(1, timeout=CAP_S * 1000)
    measured["renewed_after_s"] = round(time.monotonic() - t_live, 2)
    assert measured["renewed_after_s"] < CAP_S, measured
    text = marks.first.text_content() or ""
    found = re.search(r"renewed session \((sess_\w+) → (sess_\w+)\) in (\d+) ms", text)
    assert found, text
    old, new = found.group(1), found.group(2)
    measured["renewal_ms"] = float(found.group(3))
    assert old == first["id"] and new != old, (text, first["id"])
    second = only_session(new)  # the old session is closed (make-before-break: it went last)
    system = [i["text"] for i in second["items"] if i["role"] == "system"]
    assert len(system) == 1, second
    assert "User: My name is Ada." in system[0] and "Assistant: Reply number 1." in system[0], system[0]
    for kind in ("transport.reconnecting", "transport.dropped"):
        assert page.locator(f'#log li[data-type="{kind}"]').count() == 0, f"{kind} during a renewal"
    assert page.locator("#transcript li.turn-reconnect").count() == 0
    assert not page.evaluate("window.seenStates.some(([s]) => s === 'reconnecting')"), "said Reconnecting…"
    assert page.locator("#state").get_attribute("data-state") == "live"
    # The microphone moved: the audio element plays the new call's stream (the old one's is gone).
    assert page.evaluate("document.getElementById('remote').srcObject?.active === true"), "no live remote stream"

    step("the next turn is answered by the new session")
    say(page, "What is my name?", 1)
    (after,) = sessions()
    assert after["id"] == new and any(i["text"] == "What is my name?" for i in after["items"]), after

    step("the microphone moved: speech starting after the renewal is heard and answered by the new session")
    # The fake mic speaks 13.5 s after it opened; the old session was closed at the renewal (~9 s), so only
    # the new one can hear it. The script behaviour transcribes speech as "(audio N ms)".
    assert measured["renewed_after_s"] < 12.5, measured
    spoken = page.locator("#transcript li.turn-user", has_text=re.compile(r"\(audio \d+ ms\)"))
    expect(spoken).to_have_count(1, timeout=STEP_TIMEOUT_MS)
    expect(assistant_rows(page)).to_have_count(3, timeout=STEP_TIMEOUT_MS)
    expect(assistant_rows(page).last).to_have_text(re.compile(r"Reply number \d+\.$"), timeout=STEP_TIMEOUT_MS)
    page.click("#disconnect")
    expect(page.locator("#state")).to_have_attribute("data-state", "closed", timeout=STEP_TIMEOUT_MS)
    return measured


def text_only(page: Page, base: str, work: Path) -> dict[str, float]:
    step("?replay=items and the text-only trap on: the reply after the replay comes back as text")
    admin(EMU_PORT, "faults", {"kind": "text_only", "enabled": True})
    page.goto(f"{base}?replay=items")
    page.evaluate(WATCH_STATES)
    page.click("#connect")
    expect(page.locator("#state")).to_have_attribute("data-state", "live", timeout=STEP_TIMEOUT_MS)
    page.click("#menu")
    say(page, "My name is Ada.", 0)  # nothing seeded yet: spoken
    expect(page.locator('#log li[data-type="response.done"]')).to_have_count(1, timeout=STEP_TIMEOUT_MS)
    (first,) = sessions()
    admin(EMU_PORT, "faults", {"kind": "drop"})
    expect(page.locator("#transcript li.turn-reconnect")).to_have_count(1, timeout=STEP_TIMEOUT_MS)
    (second,) = [s for s in sessions() if s["id"] != first["id"]]
    seeded = [(i["role"], i["text"]) for i in second["items"]]
    assert ("assistant", "Reply number 1.") in seeded and ("user", "My name is Ada.") in seeded, seeded

    step("the text-only reply is deleted and asked again, spoken")
    t0 = time.monotonic()
    page.fill("#text", "Are you there?")
    page.press("#text", "Enter")
    expect(page.locator("#transcript li.turn-assistant .badge-deleted")).to_have_count(1, timeout=STEP_TIMEOUT_MS)
    live = page.locator("#transcript li.turn-assistant:not(:has(.badge-deleted))")
    expect(live).to_have_count(2, timeout=STEP_TIMEOUT_MS)
    expect(live.last).to_have_text(re.compile(r"Reply number 2\."), timeout=STEP_TIMEOUT_MS)
    # Three replies done: the first session's, the trapped one, the one asked again.
    expect(page.locator('#log li[data-type="response.done"]')).to_have_count(3, timeout=STEP_TIMEOUT_MS)
    measured = {"spoken_again_s": round(time.monotonic() - t0, 2)}
    events = saved_log(page, work)
    done = [e["event"]["response"] for e in events if e["direction"] == "server" and e["type"] == "response.done"]
    trapped = [r for r in done if r.get("output_modalities") == ["text"]]
    assert len(trapped) == 1, [r.get("output_modalities") for r in done]
    deleted = trapped[0]["output"][0]["id"]
    sent = [e["event"] for e in events if e["direction"] == "client"]
    again = {"type": "response.create", "response": {"output_modalities": ["audio"]}}
    asked = [i for i, e in enumerate(sent) if e == again]
    deletes = [i for i, e in enumerate(sent) if e == {"type": "conversation.item.delete", "item_id": deleted}]
    assert len(asked) == 1 and len(deletes) == 1 and deletes[0] < asked[0], sent[-6:]
    spoken = done[done.index(trapped[0]) + 1]
    kinds = [c["type"] for item in spoken["output"] for c in item.get("content", [])]
    assert spoken["output_modalities"] == ["audio"] and "output_audio" in kinds, spoken
    assert any(e["type"] == "transport.spoken_again" for e in events), "no spoken_again line"
    (now,) = [s for s in sessions() if s["id"] == second["id"]]
    assert deleted not in [i["id"] for i in now["items"]], now["items"]
    admin(EMU_PORT, "faults", {"kind": "text_only", "enabled": False})
    return measured


def flow(page: Page, servers: Servers, run: Run) -> dict[str, float]:
    page.goto(servers.base)
    measured = renewal(page)
    measured |= text_only(page, servers.base, run.work)
    page.screenshot(path=str(run.screenshot))
    return measured


if __name__ == "__main__":
    sys.exit(run_flow("renewal flow", SERVERS, flow))
