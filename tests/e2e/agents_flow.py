"""The browser with server-side agents, run as a script INSIDE a loopback-only network namespace.

``tests/e2e/test_server_browser.py`` runs ``ip netns exec NS python this.py``. Here we start ``bridge
emulate`` with the Korean set's script and ``bridge serve --agents examples/agents/korean/agents.toml``,
then drive Debian's Chromium: the page posts its offer to ``/api/call``, the server attaches the agents
over the sideband, and three typed turns walk triage -> korean_20s -> empathetic (with a tool call). The
history drawer must show the handoffs and the function-call names, the header the current agent, the
transcript the new agents' replies; the SERVER's transcript must record the handoffs and the tool call,
and Disconnect must hang the call up through the server.
Exit status 0 means every step passed; otherwise the last line says which step failed.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from browser_flow import (
    API_KEY,
    STEP_TIMEOUT_MS,
    WATCH_STATES,
    Run,
    Servers,
    admin,
    log_has,
    run_flow,
    step,
    transcript_turn,
)
from playwright.sync_api import Page, expect

from bridge.agents import load_agents

ROOT = Path(__file__).resolve().parents[2]
AGENTS = ROOT / "examples" / "agents" / "korean" / "agents.toml"
SCRIPT = ROOT / "examples" / "agents" / "korean" / "emulator_script.toml"
EMU_PORT = 8766
SERVE_PORT = 8081
ACCESS_TOKEN = "e2e-agents-token"
TURNS = [  # (what the user types, responses done before it, the agent after it, a handoff?, its reply)
    ("안녕하세요, 저는 스물네 살이에요.", 0, "korean_20s", True, "스물넷이구나"),
    ("사실 요즘 취업 준비 때문에 너무 불안하고 우울해요.", 2, "empathetic", True, "많이 지치셨겠어요"),
    ("한 70 정도요.", 4, "empathetic", False, "숨을 세 번"),
]


SERVERS = Servers(
    "agents-",
    EMU_PORT,
    SERVE_PORT,
    SCRIPT,
    serve_args=("--agents", str(AGENTS), "--access-token", ACCESS_TOKEN),
    serve_env={"BRIDGE_TRANSCRIPTS_DIR": "{work}/transcripts"},  # the offer goes to /api/call: no direct calls
)


def responses_done(page: Page, n: int) -> None:
    rows = page.locator('#log li[data-type="response.done"]')
    deadline = time.monotonic() + STEP_TIMEOUT_MS / 1000
    while rows.count() < n:
        if time.monotonic() > deadline:
            raise AssertionError(f"only {rows.count()} of {n} responses done")
        page.wait_for_timeout(50)


def handoff_row(page: Page, target: str) -> None:
    row = page.locator("#transcript li.turn-handoff", has_text=f"handoff → {target}").first
    expect(row).to_be_attached(timeout=STEP_TIMEOUT_MS)


def flow(page: Page, servers: Servers, run: Run) -> None:
    page.goto(servers.base)
    step("agents mode: the page knows the start agent before connecting")
    expect(page.locator("#agent")).to_have_text("Agent: triage")

    step("connect: the offer goes to /api/call, the server attaches the agents")
    page.fill("#token", ACCESS_TOKEN)
    with page.expect_response(lambda r: r.url.endswith("/api/call")) as posted:
        page.click("#connect")
    call = posted.value
    assert call.status == 201, call.status
    call_id = call.headers["x-call-id"]
    expect(page.locator("#state")).to_have_attribute("data-state", "live", timeout=STEP_TIMEOUT_MS)
    # the data channel gets the call's session.created even though the server's sideband attached first
    expect(page.locator('#log li[data-type="session.created"]').first).to_be_attached(timeout=STEP_TIMEOUT_MS)
    page.click("#menu")

    for text, before, agent, handoff, reply in TURNS:
        step(f"type {text!r} -> {agent}")
        responses_done(page, before)
        page.fill("#text", text)
        page.press("#text", "Enter")
        transcript_turn(page, "user", text)
        if handoff:
            handoff_row(page, agent)
        expect(page.locator("#agent")).to_have_text(f"Agent: {agent}", timeout=STEP_TIMEOUT_MS)
        turn = page.locator("#transcript li.turn-assistant", has_text=reply).first
        expect(turn).to_be_attached(timeout=STEP_TIMEOUT_MS)
        expect(turn.locator("strong")).to_have_text(f"Assistant · {agent}")

    step("the tool call is shown by name; every handoff is in the history")
    transcript_turn(page, "function_call", "record_emotion_score")
    responses_done(page, 6)
    expect(page.locator("#transcript li.turn-handoff")).to_have_count(2)
    expect(page.locator("#log li.cat-handoff")).to_have_count(2)  # handoffs have their own colour in the log
    log_has(page, "response.function_call_arguments.done")
    assert API_KEY not in page.content()

    step("screenshot")
    page.locator('#log li[data-type="response.function_call_arguments.done"] summary').first.click()
    page.wait_for_timeout(300)
    page.screenshot(path=str(run.screenshot))

    old_call_id, call_id = call_id, reconnect_with_the_active_agent(page, call_id, run.work)

    step("disconnect hangs the call up through the server")
    page.click("#close-drawer")
    with page.expect_response(lambda r: r.url.endswith(f"/api/call/{call_id}/hangup")) as hung:
        page.click("#disconnect")
    assert hung.value.status == 200, hung.value.status
    expect(page.locator("#state")).to_have_attribute("data-state", "closed", timeout=STEP_TIMEOUT_MS)
    deadline = time.monotonic() + 10
    while "hung up" not in (run.work / "agents-serve.out").read_text(errors="replace"):
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
    check_server_transcript(run.work, old_call_id, call_id)


def reconnect_with_the_active_agent(page: Page, call_id: str, work: Path) -> str:
    """Drop the call (emulator admin API): the page posts a new offer naming the old call; the server starts
    the new call with the agent that was active (empathetic), not the start agent (triage)."""
    step("drop: the page reconnects through /api/call with X-Resume-Call, the agents follow")
    with page.expect_response(lambda r: r.url.endswith("/api/call"), timeout=STEP_TIMEOUT_MS) as posted:
        page.evaluate(WATCH_STATES)
        admin(EMU_PORT, "faults", {"kind": "drop"})
    resp = posted.value
    assert resp.status == 201 and resp.request.headers.get("x-resume-call") == call_id, resp.request.headers
    new_id = resp.headers["x-call-id"]
    assert new_id != call_id
    expect(page.locator("#state")).to_have_attribute("data-state", "live", timeout=STEP_TIMEOUT_MS)
    said = page.evaluate("window.seenStates.map(([s, t]) => s + ': ' + t)")
    assert any(x.startswith("reconnecting: Reconnecting…") for x in said), said
    row = page.locator("#transcript li.turn-reconnect").first
    expect(row).to_contain_text("reconnected in", timeout=STEP_TIMEOUT_MS)
    expect(page.locator("#agent")).to_have_text("Agent: empathetic")
    expect(page.locator("#transcript li.turn-handoff")).to_have_count(2)  # the history is still on the page
    (session,) = [s for s in admin(EMU_PORT, "sessions")["sessions"] if s["call_id"] == new_id]
    system = [i["text"] for i in session["items"] if i["role"] == "system"]
    assert len(system) == 1 and "User: 한 70 정도요." in system[0], system
    assert "Note: handoff to empathetic" in system[0], system
    served = (work / "agents-serve.out").read_text(errors="replace")
    assert f"call {new_id} for" in served and f"(start empathetic, resuming {call_id})" in served, served[-3000:]
    created = [
        json.loads(line)["event"]
        for line in (work / "agents-emulator.jsonl").read_text(encoding="utf-8").splitlines()
        if f'"{session["id"]}"' in line and '"session.created"' in line
    ]
    want = load_agents(AGENTS).instructions_for("empathetic")
    assert created and created[0]["session"]["instructions"] == want, created[:1]
    return new_id


def check_server_transcript(work: Path, call_id: str, last_call_id: str) -> None:
    step("the server's transcript of the browser session")
    (path,) = (work / "transcripts").glob(f"*-{call_id}.jsonl")
    lines = [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]
    assert lines[0]["kind"] == "session" and lines[0]["via"] == "sideband", lines[0]
    handoffs = [(x["from"], x["to"]) for x in lines if x["kind"] == "handoff"]
    assert handoffs == [("triage", "korean_20s"), ("korean_20s", "empathetic")], handoffs
    tools = [(x["name"], x["ok"]) for x in lines if x["kind"] == "tool"]
    assert tools == [("record_emotion_score", True)], tools
    said = " ".join(x["text"] for x in lines if x["kind"] == "assistant")
    assert "스물넷이구나" in said and "숨을" in said, said
    served = (work / "agents-serve.out").read_text(errors="replace")
    assert f"call {last_call_id} hung up" in served and str(path.name) in served
    assert API_KEY not in served


if __name__ == "__main__":
    sys.exit(run_flow("agents browser flow", SERVERS, flow))
