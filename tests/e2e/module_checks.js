// Checks of the page's pure JS modules, evaluated inside Chromium by browser_flow.py.
// Returns a list of failure messages (empty = all good).
async () => {
  const { Transcript, renderTranscript, handoffTarget } = await import("/js/transcript.js");
  const { EventLog, elide, category } = await import("/js/log.js");
  const { LatencyMeter, errorWords } = await import("/js/state.js");
  const { TypedTurns } = await import("/js/turns.js");
  const fails = [];
  const check = (cond, msg) => { if (!cond) fails.push(msg); };
  const msg = (id, role, text, type = "input_text") => ({ id, type: "message", role, content: [{ type, text }] });

  // Conversation order follows previous_item_id, not arrival order.
  const t = new Transcript();
  t.apply({ type: "conversation.item.added", previous_item_id: null, item: msg("a", "user", "one") });
  t.apply({ type: "conversation.item.added", previous_item_id: "a", item: msg("c", "assistant", "three") });
  t.apply({ type: "conversation.item.added", previous_item_id: "a", item: msg("b", "user", "two") });
  check(t.list().map((i) => i.id).join() === "a,b,c", `order ${t.list().map((i) => i.id).join()}`);
  // Assistant transcript deltas, then the barge-in truncation mark.
  t.apply({ type: "conversation.item.added", previous_item_id: "c", item: { id: "d", type: "message", role: "assistant", content: [] } });
  for (const delta of ["It is ", "sunny"]) t.apply({ type: "response.output_audio_transcript.delta", item_id: "d", delta });
  t.apply({ type: "conversation.item.truncated", item_id: "d", content_index: 0, audio_end_ms: 1234 });
  const d = t.list()[3];
  check(d.text === "It is sunny" && d.truncatedMs === 1234, `truncated item ${JSON.stringify(d)}`);
  // Function calls by name; user audio transcription.
  t.apply({ type: "response.function_call_arguments.done", item_id: "f", call_id: "call_1", name: "get_weather", arguments: "{}" });
  check(t.items.get("f").name === "get_weather" && t.items.get("f").type === "function_call", "function call");
  t.apply({ type: "conversation.item.input_audio_transcription.completed", item_id: "u", transcript: "hello" });
  check(t.items.get("u").text === "hello" && t.items.get("u").role === "user", "user transcription");
  const lines = t.toJsonl().trim().split("\n").map((l) => JSON.parse(l));
  check(lines.length === 6 && lines[3].truncated_at_ms === 1234, "transcript JSONL");

  // Server-side agents: transfer_to_<name> calls are handoffs and give the current agent; the same call
  // seen twice (arguments.done, then conversation.item.done) counts once.
  check(handoffTarget("transfer_to_korean_20s") === "korean_20s" && handoffTarget("get_weather") === null, "handoffTarget");
  const a = new Transcript();
  a.clear({ start: "triage", names: ["triage", "korean_20s", "empathetic"] });
  a.apply({ type: "conversation.item.added", previous_item_id: null, item: { id: "r1", type: "message", role: "assistant", content: [] } });
  const call = { id: "fc1", type: "function_call", name: "transfer_to_korean_20s", call_id: "c1", arguments: '{"reason":"24, Korean"}' };
  a.apply({ type: "response.function_call_arguments.done", item_id: "fc1", call_id: "c1", name: call.name, arguments: call.arguments });
  a.apply({ type: "conversation.item.done", previous_item_id: "r1", item: call });
  a.apply({ type: "conversation.item.added", previous_item_id: "fc1", item: { id: "r2", type: "message", role: "assistant", content: [] } });
  check(a.agent === "korean_20s", `current agent ${a.agent}`);
  check(a.items.get("r1").agent === "triage" && a.items.get("r2").agent === "korean_20s", "reply agents");
  const fc = a.items.get("fc1");
  check(fc.from === "triage" && fc.to === "korean_20s" && fc.reason === "24, Korean", `handoff ${JSON.stringify(fc)}`);
  const ol = document.createElement("ol");
  renderTranscript(ol, a);
  check(ol.children[1].classList.contains("turn-handoff"), "handoff row class");
  check(ol.children[1].textContent.includes("handoff → korean_20s"), `handoff row ${ol.children[1].textContent}`);
  check(ol.children[2].textContent.includes("Assistant · korean_20s"), `reply row ${ol.children[2].textContent}`);
  check(JSON.parse(a.toJsonl().split("\n")[1]).handoff_to === "korean_20s", "handoff in JSONL");
  a.clear(null);
  check(a.agent === null, "no agents -> no current agent");

  // Event log: delta floods collapse into one row; audio payloads are elided.
  const list = document.createElement("ol");
  const log = new EventLog(list);
  for (let i = 0; i < 50; i++) log.add("server", { type: "response.output_audio_transcript.delta", item_id: "d", delta: "x" });
  log.add("server", { type: "response.done" });
  check(log.entries.length === 2 && log.entries[0].count === 50 && list.childElementCount === 2, "delta collapse");
  check(log.entries[0].text.length === 50, "collapsed text");
  const elided = elide({ type: "input_audio_buffer.append", audio: "A".repeat(9600) });
  check(elided.audio === "<9600 base64 chars>", `elide ${elided.audio}`);
  check(category("server", "error") === "error" && category("server", "session.updated") === "session", "category");
  const handoffEvent = { type: "response.function_call_arguments.done", name: "transfer_to_empathetic" };
  check(category("server", handoffEvent.type, handoffEvent) === "handoff", "handoff colour");
  check(category("server", handoffEvent.type, { ...handoffEvent, name: "get_weather" }) === "response", "tool colour");
  log.setFilter("done");
  check(log.entries[0].row.hidden && !log.entries[1].row.hidden, "filter");
  check(log.toJsonl().trim().split("\n").length === 2, "log JSONL");

  // Latency: from speech_stopped (or our response.create) to the first output of the reply.
  let now = 0;
  const meter = new LatencyMeter(() => now);
  meter.observe("server", { type: "input_audio_buffer.speech_stopped" });
  now = 420;
  check(meter.observe("server", { type: "output_audio_buffer.started" }) === 420, "latency speech");
  meter.observe("client", { type: "response.create" });
  now = 600;
  check(meter.observe("server", { type: "response.output_text.delta" }) === 180, "latency text");
  check(meter.median() === 300, `median ${meter.median()}`);
  check(errorWords({ type: "error", error: { code: "session_expired" } }).includes("time limit"), "error words");

  // A message typed while the assistant answers interrupts it (cancel, clear) and goes once the cancelled
  // response is done; typed while only the audio still streams, it clears the audio and goes at once.
  const sent = [];
  const turns = new TypedTurns((e) => sent.push(e.type));
  check(turns.say("hi") === "sent" && sent.join() === "conversation.item.create,response.create", `idle ${sent}`);
  sent.length = 0;
  turns.observe({ type: "response.created", response: { id: "r1" } });
  turns.observe({ type: "output_audio_buffer.started", response_id: "r1" });
  check(turns.say("stop") === "queued" && turns.say("and this") === "queued", "queued during a reply");
  check(sent.join() === "response.cancel,output_audio_buffer.clear", `interrupt ${sent}`);
  sent.length = 0;
  turns.observe({ type: "output_audio_buffer.cleared", response_id: "r1" });
  check(sent.length === 0, "nothing before response.done");
  turns.observe({ type: "response.done", response: { id: "r1", status: "cancelled" } });
  check(sent.join() === "conversation.item.create,conversation.item.create,response.create", `flushed ${sent}`);
  sent.length = 0;
  turns.observe({ type: "response.created", response: { id: "r2" } });
  turns.observe({ type: "output_audio_buffer.started", response_id: "r2" });
  turns.observe({ type: "response.done", response: { id: "r2", status: "completed" } });
  check(turns.say("next") === "sent" && sent.join() === "output_audio_buffer.clear,conversation.item.create,response.create",
    `while the audio streams ${sent}`);

  // Every control is labelled (keyboard and screen-reader users).
  for (const el of document.querySelectorAll("input, select")) {
    check(el.labels && el.labels.length > 0, `unlabelled control #${el.id}`);
  }
  for (const el of document.querySelectorAll("button")) {
    check((el.textContent.trim() || el.getAttribute("aria-label")), `unnamed button #${el.id}`);
  }
  return fails;
}
