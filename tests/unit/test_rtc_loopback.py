"""loopback_candidates: patches aioice's host address lookup, nests, restores."""

from __future__ import annotations

import aioice.ice

from bridge.rtc.loopback import is_active, loopback_candidates


def test_patch_restricts_to_loopback_nests_and_restores() -> None:
    original = aioice.ice.get_host_addresses
    assert "127.0.0.1" not in original(use_ipv4=True, use_ipv6=False)  # aioice never offers it itself
    with loopback_candidates():
        assert aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=True) == ["127.0.0.1"]
        with loopback_candidates():
            assert is_active()
        assert aioice.ice.get_host_addresses(True, False) == ["127.0.0.1"]  # inner exit keeps the patch
        assert aioice.ice.get_host_addresses(False, True) == []
    assert aioice.ice.get_host_addresses is original
    assert not is_active()


def test_restored_after_an_exception() -> None:
    original = aioice.ice.get_host_addresses
    try:
        with loopback_candidates():
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    assert aioice.ice.get_host_addresses is original
