// Typed turns while the assistant is talking: a typed message interrupts the reply, as speaking would.
//
// Over WebRTC the page cannot create a response while one is active (the server answers
// conversation_already_has_active_response), so a message typed during a reply is handled the way a
// barge-in is (PROTOCOL.md 4.5): response.cancel (only while a response is active), then
// output_audio_buffer.clear (the server stops the audio and truncates the item at what it sent), and the
// message is sent once the cancelled response is done. A message typed while the audio of a finished
// response is still streaming only needs the clear. Otherwise it goes at once.

export class TypedTurns {
  /** `send(event)`: one client event on the data channel. */
  constructor(send) {
    this.send = send;
    this.active = null; // the response writing to the conversation, if any
    this.playing = false; // output audio still streaming (output_audio_buffer.started .. stopped/cleared)
    this.pending = []; // texts waiting for the cancelled response to finish
    this.cancelling = false;
  }

  /** Feed every server event. */
  observe(event) {
    switch (event?.type) {
      case "response.created":
        this.active = event.response?.id ?? "?";
        break;
      case "response.done":
        if (!event.response?.id || event.response.id === this.active) this.active = null;
        this.cancelling = false;
        this.flush();
        break;
      case "output_audio_buffer.started":
        this.playing = true;
        break;
      case "output_audio_buffer.stopped":
      case "output_audio_buffer.cleared":
        this.playing = false;
        break;
      default:
    }
  }

  /** A typed message: sent now, or after interrupting the reply. Returns "sent" or "queued". */
  say(text) {
    if (this.active !== null) {
      this.pending.push(text);
      if (!this.cancelling) {
        this.cancelling = true;
        this.send({ type: "response.cancel" });
        this.send({ type: "output_audio_buffer.clear" });
      }
      return "queued";
    }
    if (this.playing) {
      this.send({ type: "output_audio_buffer.clear" });
      this.playing = false;
    }
    this.deliver(text);
    return "sent";
  }

  flush() {
    if (this.active !== null || !this.pending.length) return;
    const texts = this.pending.splice(0);
    texts.slice(0, -1).forEach((text) => this.item(text)); // earlier ones join the conversation quietly
    this.deliver(texts[texts.length - 1]);
  }

  item(text) {
    this.send({
      type: "conversation.item.create",
      item: { type: "message", role: "user", content: [{ type: "input_text", text }] },
    });
  }

  deliver(text) {
    this.item(text);
    this.send({ type: "response.create" });
  }

  reset() {
    this.active = null;
    this.playing = false;
    this.pending = [];
    this.cancelling = false;
  }
}
