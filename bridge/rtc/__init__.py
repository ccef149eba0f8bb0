"""aiortc glue shared by both peers (client link and emulator).

- :mod:`bridge.rtc.loopback`: keep ICE host candidates on 127.0.0.1 (tests, emulator loopback mode).
- :mod:`bridge.rtc.reorder`: the pure packet-ordering / hole policy (no I/O, fake-clock testable).
- :mod:`bridge.rtc.opus`: an Opus decoder with packet-loss concealment.
- :mod:`bridge.rtc.receiver`: :class:`AudioReceiver`, the low-latency replacement for aiortc's audio
  jitter buffer + decoder thread.
- :mod:`bridge.rtc.tracks`: :class:`PacedAudioTrack`, 20 ms frames on monotonic deadlines.

Submodules are imported explicitly (``from bridge.rtc.receiver import AudioReceiver``) so that pure
users of :mod:`bridge.rtc.reorder` do not pay for importing aiortc.
"""
