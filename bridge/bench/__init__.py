"""The latency lab (``bridge bench``, issue #6): WebRTC vs WebSocket, end to end, under real impairment.

Modules: ``profiles`` (the network profiles, defined once), ``forwarder`` (the userspace impairment
process), ``netem`` (the namespace topology around it), ``signals`` (test audio and onset detection),
``metrics`` (per-trial numbers from wavs + transcripts + emulator logs), ``lab`` (runs the emulator and
``bridge run`` in the namespaces), ``stock`` (a plain aiortc baseline client), ``report`` (table, JSON,
Markdown, plots), ``cli`` (``bridge bench``). ``receive`` is the receive-path micro-benchmark.
"""
