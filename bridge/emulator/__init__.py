"""The offline Realtime API emulator (``bridge emulate``), GA shape only (PROTOCOL.md).

Public entry points: :func:`bridge.emulator.app.make_app`, :func:`bridge.emulator.testing.running_emulator`,
:class:`bridge.emulator.engine.Engine`, :class:`bridge.emulator.config.EmulatorConfig`.
This package never imports ``bridge.link`` or ``bridge.session`` (docs/architecture.md).
"""
