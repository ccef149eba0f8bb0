"""The offline Realtime API emulator (``bridge emulate``), GA shape only (PROTOCOL.md; docs/emulator.md).

Public entry points: :func:`bridge.emulator.app.make_app`, :func:`bridge.emulator.testing.running_emulator`
(with fault injection: ``RunningEmulator.inject/open_sessions/restart``), :class:`bridge.emulator.engine.Engine`,
:class:`bridge.emulator.config.EmulatorConfig`. This package never imports the client's ``bridge.link``,
runtime (``bridge.session``), ``bridge.agents`` or ``bridge.app`` (docs/architecture.md); it uses only the pure
helpers of ``bridge.protocol`` and ``bridge.rtc``.
"""
