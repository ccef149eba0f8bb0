"""Kiosk mode parts that do not depend on the call: local voice activity detection (:mod:`.vad`), an
optional wake phrase (:mod:`.wakeword`), the pre-roll ring and the connect-time backlog (:mod:`.preroll`),
the operator view (:mod:`.health`), systemd notification (:mod:`.systemd`), transcript retention
(:mod:`.retention`) and the call budget (:mod:`.budget`). docs/kiosk.md says how they fit together.
"""
