"""Small asyncio helpers shared by every lifetime owner."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from bridge.errors import BridgeError


def leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    """Every exception inside a (nested) exception group, in order."""
    out: list[BaseException] = []
    for exc in group.exceptions:
        out.extend(leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return out


@contextlib.asynccontextmanager
async def task_group() -> AsyncIterator[asyncio.TaskGroup]:
    r"""An ``asyncio.TaskGroup`` whose failure surfaces as one exception rather than an ``ExceptionGroup``
    (so ``except BridgeError`` works where the lifetime's owner decides): a single failure as itself, and
    several :class:`bridge.errors.BridgeError`\ s at once (one cause seen by several watchers: a sound
    server restarting ends the microphone, the speaker and the watch together) as the first of them.
    Anything else stays grouped."""
    try:
        async with asyncio.TaskGroup() as tg:
            yield tg
    except BaseExceptionGroup as group:
        found = leaves(group)
        if len(found) == 1 or (found and all(isinstance(e, BridgeError) for e in found)):
            raise found[0] from None
        raise
