// Checks of the page's pure JS modules, evaluated inside Chromium by browser_flow.py.
// Returns a list of failure messages (empty = all good).
async () => {
  const { Transcript, renderTranscript, handoffTarget } = await import("/js/transcript.js");
  const { EventLog, elide, category } = await import("/js/log.js");
  const { LatencyMeter, errorWords } = await import("/js/state.js");
  const { TypedTurns } = await import("/js/turns.js");
  const R = await import("/js/resilience.js");
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

  // Reconnecting (resilience.js, the page's copy of bridge/call/supervisor.py + replay.py): backoff 0.25 s
  // doubling to 8 s, each wait from the upper half of its range.
  const ceilings = [1, 2, 3, 4, 5, 6, 7, 12].map((n) => R.backoffDelay(n, () => 0.999999));
  check(ceilings.map(Math.round).join() === "250,500,1000,2000,4000,8000,8000,8000", `backoff ceilings ${ceilings}`);
  check(R.backoffDelay(1, () => 0) === 125 && R.backoffDelay(9, () => 0) === 4000, "backoff floors");
  // Which failures are retried: unreachable, 5xx, 429; not 401/403/400 nor a lost quota.
  check(R.retryable("TypeError: Failed to fetch") && R.retryable({ status: 502, code: "upstream_error" }), "retry 5xx");
  check(R.retryable({ status: 429, code: "rate_limited" }) && R.retryable({ status: 503 }), "retry 429/503");
  check(!R.retryable({ status: 401, code: "access_token_required" }) && !R.retryable({ status: 403 }), "no retry 401/403");
  check(!R.retryable({ status: 400 }) && !R.retryable({ status: 429, code: "insufficient_quota" }), "no retry 400/quota");
  // Our server answers a spent quota as 402 insufficient_quota: final. Its 503 (rate limited) is retried.
  check(!R.retryable({ status: 402, code: "insufficient_quota" }) && !R.retryable({ status: 402 }), "no retry 402 quota");
  check(R.retryable({ status: 503, code: "upstream_rate_limited" }), "retry upstream_rate_limited");
  // The replay: one system message, role-labelled, user turns as transcribed, the cut reply marked; handoffs
  // and tool results as notes; our own marker lines and deleted items left out; then the ask for audio.
  const r = new Transcript();
  r.clear({ start: "triage", names: ["triage", "korean_20s"] });
  r.apply({ type: "conversation.item.added", previous_item_id: null, item: msg("u1", "user", "my name is Ada") });
  r.apply({ type: "conversation.item.added", previous_item_id: "u1", item: msg("a1", "assistant", "Hi Ada", "output_text") });
  r.apply({ type: "conversation.item.truncated", item_id: "a1", audio_end_ms: 300 });
  r.apply({ type: "response.function_call_arguments.done", item_id: "h1", call_id: "c1", name: "transfer_to_korean_20s", arguments: "{}" });
  r.apply({ type: "conversation.item.added", previous_item_id: "h1", item: { id: "o1", type: "function_call_output", call_id: "c9", output: '{"ok":true}' } });
  r.apply({ type: "conversation.item.added", previous_item_id: "o1", item: msg("x1", "user", "gone") });
  r.apply({ type: "conversation.item.deleted", item_id: "x1" });
  r.mark("reconnect", "reconnected in 300 ms");
  r.apply({ type: "conversation.item.added", previous_item_id: null, item: msg("replay_0", "system", "old summary") });
  check(r.list().length === 6 && r.list()[5].type === "reconnect" && !r.items.has("replay_0"), "marker kept, replay hidden");
  const events = R.replayEvents(R.historyOf(r.list()));
  check(events.length === 2 && events[1].type === "session.update", `replay events ${events.map((e) => e.type)}`);
  check(JSON.stringify(events[1].session.output_modalities) === '["audio"]', "ask for audio");
  const item = events[0].item;
  check(events[0].type === "conversation.item.create" && item.role === "system" && item.id === "replay_0", "one system item");
  check(item.content[0].text === [R.SUMMARY_HEAD, "User: my name is Ada",
    "Assistant (interrupted; the user heard part of it): Hi Ada", "Note: handoff to korean_20s", 'Tool: {"ok":true}'].join("\n"),
    `summary ${item.content[0].text}`);
  check(R.replayEvents([]).length === 0, "nothing said, nothing replayed");
  // The budget keeps the newest turns: at most 40 turns and 8000 characters.
  const many = Array.from({ length: 50 }, (_, i) => ({ role: "user", text: `turn ${i}` }));
  const kept = R.within(many);
  check(kept.length === 40 && kept[0].text === "turn 10" && kept[39].text === "turn 49", "40 turns");
  const long = [{ role: "user", text: "a".repeat(5000) }, { role: "assistant", text: "b".repeat(5000) }];
  check(R.within(long).length === 1 && R.within(long)[0].text[0] === "b", "8000 chars");
  // ?replay=items (test-only, like bridge run --replay items): one item per turn, assistant as output_text.
  check(R.replayShape("?replay=items") === "items" && R.replayShape("") === "summary" && R.replayShape("?x=1") === "summary",
    "replay shape from the query");
  const asItems = R.replayEvents([{ role: "user", text: "hi" }, { role: "assistant", text: "hello" },
    { role: "note", text: "handoff to x" }], undefined, undefined, "items");
  check(asItems.map((e) => e.item?.id || e.type).join() === "replay_0,replay_1,replay_2,session.update", `items ${asItems.map((e) => e.type)}`);
  check(asItems[1].item.role === "assistant" && asItems[1].item.content[0].type === "output_text"
    && asItems[2].item.role === "system" && asItems[2].item.content[0].text === "Note: handoff to x", "items shape");
  // A text-only reply is deleted and asked again, spoken; a spoken one, a cancelled one or a tool call is not.
  const done = (output, status = "completed") => ({ type: "response.done", response: { id: "r", status, output } });
  const textReply = { id: "it1", type: "message", role: "assistant", content: [{ type: "output_text", text: "hi" }] };
  const again = R.spokenAgain(done([textReply]));
  check(again.length === 2 && again[0].type === "conversation.item.delete" && again[0].item_id === "it1"
    && JSON.stringify(again[1]) === '{"type":"response.create","response":{"output_modalities":["audio"]}}', `spoken again ${JSON.stringify(again)}`);
  const spoken = { ...textReply, content: [{ type: "output_audio", transcript: "hi" }] };
  check(!R.spokenAgain(done([spoken])).length && !R.spokenAgain(done([textReply], "cancelled")).length
    && !R.spokenAgain(done([{ id: "f", type: "function_call", name: "x" }])).length && !R.spokenAgain({ type: "response.created" }).length,
    "spoken or cancelled replies are left alone");
  // Renewal: the last min(5 min, 25 %) of the lifetime; nothing without a cap.
  check(R.renewalDueAt(3600, 0) === 3300_000 && R.renewalDueAt(12, 0) === 9000 && R.renewalDueAt(null, 0) === null
    && R.renewalDueAt(0, 0) === null, `renewal due ${R.renewalDueAt(3600, 0)} ${R.renewalDueAt(12, 0)}`);
  // The turn boundary: no response generating, no reply audio playing, no speech heard without its end.
  const ts = new R.TurnState();
  const at = [ts.atBoundary()];
  for (const type of ["input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped", "response.created",
    "output_audio_buffer.started", "response.done", "output_audio_buffer.stopped"]) {
    ts.observe({ type, response: { id: "r1" } });
    at.push(ts.atBoundary());
  }
  check(at.join() === "true,false,true,false,false,false,true", `turn boundary ${at}`);

  // Liveness: inbound packets that stop moving for 2.5 s mean a dead connection.
  const w = new R.InboundWatch();
  check(!w.sample(0, 0) && !w.sample(10, 1000) && !w.sample(10, 3400) && w.sample(10, 3500), "inbound watch");
  check(!w.sample(11, 3600), "packets again: alive");

  // Every control is labelled (keyboard and screen-reader users).
  for (const el of document.querySelectorAll("input, select")) {
    check(el.labels && el.labels.length > 0, `unlabelled control #${el.id}`);
  }
  for (const el of document.querySelectorAll("button")) {
    check((el.textContent.trim() || el.getAttribute("aria-label")), `unnamed button #${el.id}`);
  }
  return fails;
}
