"""The browser end-to-end flow, run as a script INSIDE a loopback-only network namespace.

``tests/e2e/test_server_browser.py`` creates the namespace and runs ``ip netns exec NS python this.py``.
Here we start ``bridge emulate`` (script behaviour) and ``bridge serve`` against it, then drive Debian's
Chromium with Playwright: refused token, connect, speak (fake mic), events + transcript, a typed
message, a function call, an injected error event, disconnect, reconnect with a greeting.
Exit status 0 means every step passed; otherwise the last line says which step failed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from playwright.sync_api import Page, expect, sync_playwright

EMU_PORT = 8765
SERVE_PORT = 8080
API_KEY = "sk-e2e-SECRET-5f1d8c2a9b7e4d3c"
ACCESS_TOKEN = "e2e-access-token"
CHROMIUM = "/usr/bin/chromium"
STEP_TIMEOUT_MS = 20_000

SCRIPT = {
    "turns": [
        # A long spoken reply, so the second utterance in the fake-mic file barges in on it.
        {"user": "hello, what's the weather like today", "text": "It is sunny in the emulator.", "seconds": 5.0},
        {"user": "wait, stop please", "text": "Sorry, go on.", "seconds": 0.5},
        {"function_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}]},
        {"error": {"code": "server_error", "type": "server_error", "message": "Injected failure for the test."}},
    ]
}


def wait_port(port: int, proc: subprocess.Popen[bytes], deadline: float) -> None:
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"process exited early with {proc.returncode}: {proc.args}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"port {port} never opened")


def emulator_has_cors(emu_port: int, serve_port: int) -> bool:
    """Does the emulator answer a browser's CORS preflight for /realtime/calls (as the real API does)?

    It must: the page posts its offer straight to the API (BRIDGE_CALLS=direct), as it does in
    production; the same-origin relay is tested in Python (tests/integration/test_server_mint.py).
    """
    req = urllib.request.Request(f"http://127.0.0.1:{emu_port}/v1/realtime/calls", method="OPTIONS")
    req.add_header("Origin", f"http://127.0.0.1:{serve_port}")
    req.add_header("Access-Control-Request-Method", "POST")
    req.add_header("Access-Control-Request-Headers", "authorization,content-type")
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return bool(resp.headers.get("Access-Control-Allow-Origin"))
    except OSError:
        return False


@dataclass(frozen=True)
class Servers:
    """How a flow starts ``bridge emulate`` (script behaviour) and ``bridge serve`` against it. Their output
    goes to ``<prefix>emulator.out`` and ``<prefix>serve.out`` in the work folder (the test prints the tails
    when a flow fails), the emulator's event log to ``<prefix>emulator.jsonl``."""

    prefix: str
    emu_port: int
    serve_port: int
    script: dict[str, Any] | Path
    """The emulator's script: a file, or turns written to ``<prefix>script.json``."""
    emulator_args: tuple[str, ...] = ()
    serve_args: tuple[str, ...] = ()
    serve_env: dict[str, str] = field(default_factory=lambda: {"BRIDGE_CALLS": "direct"})
    """For ``bridge serve``; ``{work}`` in a value is the work folder."""

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.serve_port}/"


@dataclass(frozen=True)
class Run:
    """A flow's command line (``test_server_browser.py`` passes these)."""

    work: Path
    wav: Path
    screenshot: Path


Flow = Callable[[Page, Servers, Run], "dict[str, float] | None"]


def start_servers(work: Path, servers: Servers) -> list[subprocess.Popen[bytes]]:
    s = servers
    script = s.script
    if not isinstance(script, Path):
        script = work / f"{s.prefix}script.json"
        script.write_text(json.dumps(s.script))
    env = {**os.environ, "OPENAI_API_KEY": API_KEY, "PYTHONUNBUFFERED": "1"}
    env.pop("OPENAI_BASE_URL", None)
    emulate = [sys.executable, "-m", "bridge", "emulate", "--port", str(s.emu_port), "--behaviour",
               f"script:{script}", "--think-ms", "100", "--log", str(work / f"{s.prefix}emulator.jsonl"),
               *s.emulator_args]  # fmt: skip
    serve = [sys.executable, "-m", "bridge", "serve", "--port", str(s.serve_port), "-v",
             "--api-base", f"http://127.0.0.1:{s.emu_port}/v1", *s.serve_args]  # fmt: skip
    out = open(work / f"{s.prefix}emulator.out", "wb")
    procs = [subprocess.Popen(emulate, stdout=out, stderr=subprocess.STDOUT, env=env)]
    try:
        deadline = time.monotonic() + 20
        wait_port(s.emu_port, procs[0], deadline)
        if not emulator_has_cors(s.emu_port, s.serve_port):
            raise SystemExit("the emulator does not answer the CORS preflight for /v1/realtime/calls")
        env |= {k: v.format(work=work) for k, v in s.serve_env.items()}
        out = open(work / f"{s.prefix}serve.out", "wb")
        procs.append(subprocess.Popen(serve, stdout=out, stderr=subprocess.STDOUT, env=env))
        wait_port(s.serve_port, procs[1], deadline)
    except BaseException:
        stop_servers(procs)
        raise
    return procs


def launch_page(pw: Any, profile: Path, wav: Path, page_errors: list[str]) -> Page:
    """Debian's Chromium, headless, fake mic playing ``wav`` once; flags from ENVIRONMENT.md (loopback ICE)."""
    context = pw.chromium.launch_persistent_context(
        str(profile),
        executable_path=CHROMIUM,
        headless=True,
        viewport={"width": 1440, "height": 900},
        args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-audio-capture={wav}%noloop",
            "--allow-loopback-in-peer-connection", "--autoplay-policy=no-user-gesture-required",
        ],
    )  # fmt: skip
    page = context.pages[0] if context.pages else context.new_page()
    page.on("pageerror", lambda exc: page_errors.append(str(exc)))
    page.on("console", lambda msg: print(f"console.{msg.type}: {msg.text}", flush=True))
    return page


WATCH_STATES = """() => {
  const el = document.getElementById("state");
  window.seenStates = [];
  new MutationObserver(() => window.seenStates.push([el.dataset.state, el.textContent]))
    .observe(el, { attributes: true, childList: true, characterData: true, subtree: true });
}"""  # every change of the header's state, recorded (a quick reconnect is over before a poll sees it)


def admin(port: int, path: str, body: dict[str, Any] | None = None) -> Any:
    """The emulator's admin API (docs/emulator.md "The admin API"): GET, or POST ``body`` as JSON."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/_emulator/{path}", data=data, method="GET" if data is None else "POST"
    )
    req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=5) as resp:
        return json.loads(resp.read())


def stop_servers(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()


def step(name: str) -> None:
    print(f"step: {name}", flush=True)


def log_has(page: Page, event_type: str) -> None:
    expect(page.locator(f'#log li[data-type="{event_type}"]').first).to_be_attached(timeout=STEP_TIMEOUT_MS)


def transcript_turn(page: Page, cls: str, text: str) -> None:
    expect(page.locator(f"#transcript li.turn-{cls}", has_text=text).first).to_be_attached(timeout=STEP_TIMEOUT_MS)


def flow(page: Page, servers: Servers, run: Run) -> None:
    page.goto(servers.base)
    expect(page.locator("#state")).to_have_attribute("data-state", "idle")
    expect(page.locator("#text")).to_be_disabled()

    step("pure JS modules and labels")
    fails = page.evaluate(Path(__file__).with_name("module_checks.js").read_text())
    assert fails == [], fails

    step("narrow screen: no sideways scrolling")
    page.set_viewport_size({"width": 390, "height": 844})
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    page.screenshot(path=str(run.screenshot.with_name("narrow.png")))
    page.set_viewport_size({"width": 1440, "height": 900})

    step("refused access token shows the error box")
    expect(page.locator("#token-field")).to_be_visible()
    page.fill("#token", "wrong-token")
    page.click("#connect")
    expect(page.locator("#errors")).to_be_visible(timeout=STEP_TIMEOUT_MS)
    expect(page.locator("#error-list")).to_contain_text("access token was refused")
    expect(page.locator("#state")).to_have_attribute("data-state", "failed")
    page.click("#dismiss")
    expect(page.locator("#errors")).to_be_hidden()

    step("connect")
    page.fill("#token", ACCESS_TOKEN)
    page.click("#connect")
    expect(page.locator("#state")).to_have_attribute("data-state", "live", timeout=STEP_TIMEOUT_MS)
    expect(page.locator("#text")).to_be_enabled()
    log_has(page, "session.created")

    step("speak through the fake microphone: VAD turn, transcription, spoken reply")
    log_has(page, "input_audio_buffer.speech_started")
    log_has(page, "conversation.item.input_audio_transcription.completed")
    log_has(page, "output_audio_buffer.started")
    log_has(page, "response.done")
    page.click("#menu")
    expect(page.locator("#drawer")).to_be_visible()
    transcript_turn(page, "user", "weather like today")
    transcript_turn(page, "assistant", "It is sunny in the emulator.")

    step("barge-in: the second utterance cuts the reply; the turn is marked where it was cut")
    log_has(page, "output_audio_buffer.cleared")
    log_has(page, "conversation.item.truncated")
    cut = page.locator("#transcript li.turn-assistant .badge-truncated").first
    expect(cut).to_have_text(re.compile(r"^truncated @\d+ ms$"), timeout=STEP_TIMEOUT_MS)
    transcript_turn(page, "user", "wait, stop please")
    transcript_turn(page, "assistant", "Sorry, go on.")
    expect(page.locator("#latency")).to_contain_text(" ms")
    page.keyboard.press("Escape")
    expect(page.locator("#drawer")).to_be_hidden()

    step("typed message -> function call shown by name (typed while a reply may still be running: it interrupts)")
    page.fill("#text", "What is the weather in Paris?")
    page.press("#text", "Enter")
    log_has(page, "response.function_call_arguments.done")
    # typed right after the barge-in's reply started: never "conversation_already_has_active_response"
    expect(page.locator('#log li[data-type="error"]')).to_have_count(0)
    transcript_turn(page, "user", "What is the weather in Paris?")
    transcript_turn(page, "function_call", "get_weather")

    step("typed message -> injected error event in the error box")
    page.fill("#text", "Please fail now.")
    page.click("#send")
    expect(page.locator("#errors")).to_be_visible(timeout=STEP_TIMEOUT_MS)
    expect(page.locator("#error-list")).to_contain_text("Injected failure for the test.")
    log_has(page, "error")

    step("screenshot")
    page.click("#menu")
    page.locator('#log li[data-type="error"] summary').first.click()
    page.wait_for_timeout(300)
    page.screenshot(path=str(run.screenshot))
    page.click("#close-drawer")
    page.click("#dismiss")

    step("disconnect")
    page.click("#disconnect")
    expect(page.locator("#state")).to_have_attribute("data-state", "closed", timeout=STEP_TIMEOUT_MS)
    expect(page.locator("#text")).to_be_disabled()
    expect(page.locator("#connect")).to_be_enabled()

    step("reconnect with a greeting")
    page.fill("#greeting", "Hello again!")
    page.click("#connect")
    expect(page.locator("#state")).to_have_attribute("data-state", "live", timeout=STEP_TIMEOUT_MS)
    page.click("#menu")
    transcript_turn(page, "user", "Hello again!")
    log_has(page, "response.done")
    page.click("#close-drawer")
    page.click("#disconnect")
    expect(page.locator("#state")).to_have_attribute("data-state", "closed", timeout=STEP_TIMEOUT_MS)


def run_flow(name: str, servers: Servers, flow: Flow) -> int:
    """The script's main: start the servers, open Chromium on the page, run ``flow`` (what it measured is
    printed), print the events the page logged, stop everything. 0 when every step passed and the page
    raised no error."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--work", required=True, type=Path)
    parser.add_argument("--wav", required=True, type=Path, help="the fake microphone's file")
    parser.add_argument("--screenshot", required=True, type=Path)
    args = parser.parse_args()
    run = Run(args.work, args.wav, args.screenshot)
    procs = start_servers(run.work, servers)
    page_errors: list[str] = []
    try:
        with sync_playwright() as pw:
            page = launch_page(pw, run.work / f"{servers.prefix}profile", run.wav, page_errors)
            try:
                measured = flow(page, servers, run)
            finally:
                events = page.locator("#log li").evaluate_all("els => els.map(e => e.dataset.type)")
                print("events seen:", " ".join(events), flush=True)
                page.context.close()
    finally:
        stop_servers(procs)
    if page_errors:
        print("page errors:", page_errors, flush=True)
        return 1
    if measured:
        print("measured:", json.dumps(measured), flush=True)
    print(f"{name}: OK", flush=True)
    return 0


if __name__ == "__main__":
    servers = Servers("", EMU_PORT, SERVE_PORT, SCRIPT, serve_args=("--access-token", ACCESS_TOKEN))
    sys.exit(run_flow("browser flow", servers, flow))
