"""Small asyncio helpers shared by every lifetime owner."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator


def leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    """Every exception inside a (nested) exception group, in order."""
    out: list[BaseException] = []
    for exc in group.exceptions:
        out.extend(leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return out


@contextlib.asynccontextmanager
async def task_group() -> AsyncIterator[asyncio.TaskGroup]:
    """An ``asyncio.TaskGroup`` whose failure, when it is a single exception, surfaces as that exception
    rather than wrapped in an ``ExceptionGroup`` (so ``except BridgeError`` works at the CLI boundary).
    Several failures stay grouped."""
    try:
        async with asyncio.TaskGroup() as tg:
            yield tg
    except BaseExceptionGroup as group:
        found = leaves(group)
        if len(found) == 1:
            raise found[0] from None
        raise
