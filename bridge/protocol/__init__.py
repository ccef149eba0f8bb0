"""Pure Realtime-protocol helpers, no I/O: ids, PCM math, event shapes.

Both the client side (``bridge.link``, ``bridge.session``) and the emulator may import this
package; it is checked against the official spec and SDK types in ``tests/unit``.
"""
