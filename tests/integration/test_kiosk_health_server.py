"""The health server for real: started on a free loopback port, read over HTTP, /metrics parsed with
prometheus-client's own parser."""

from __future__ import annotations

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from bridge.errors import ConfigError
from bridge.kiosk.health import KioskState, KioskStatus, serve_health


def families(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def value(fams: dict[str, list[tuple[dict[str, str], float]]], name: str, **labels: str) -> float:
    (v,) = [v for lab, v in fams[name] if all(lab.get(k) == x for k, x in labels.items())]
    return v


async def test_healthz_and_metrics_over_http() -> None:
    remaining = [600.0]
    status = KioskStatus(budget_remaining=lambda: remaining[0])
    status.set_device("input", "USB Audio Device: mono", True)
    status.set_device("output", "USB Audio Device: speaker", True)
    status.mic_alive()
    status.on_wake()
    status.on_call_start()
    status.set_state(KioskState.IN_CALL)
    status.observe_response_ms(640)
    status.observe_response_ms(910)
    status.observe_bargein_ms(120)
    status.add_mic_overflows(2)
    status.add_playout_underruns(1)
    status.set_aec("on", erle_db=18.5)
    status.on_reconnect()
    status.on_call_end("idle", user_turns=0, seconds=31)
    status.set_state(KioskState.IDLE)

    async with serve_health(status, port=0) as server, aiohttp.ClientSession() as http:
        assert server.host == "127.0.0.1" and server.port > 0
        async with http.get(server.url + "/healthz") as resp:
            assert resp.status == 200
            doc = await resp.json()
        assert doc["state"] == "idle" and doc["healthy"] is True
        assert doc["calls_today"] == 1 and doc["wakes_today"] == 1
        assert doc["budget_remaining_s"] == 600.0
        assert {d["role"]: d["name"] for d in doc["devices"]} == {
            "input": "USB Audio Device: mono",
            "output": "USB Audio Device: speaker",
        }
        assert doc["uptime_s"] >= 0 and doc["last_error"] is None

        async with http.get(server.url + "/metrics") as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("text/plain; version=")
            fams = families(await resp.text())
        assert value(fams, "bridge_kiosk_calls_total", reason="idle") == 1
        assert value(fams, "bridge_kiosk_call_seconds_total") == 31
        assert value(fams, "bridge_kiosk_false_wakes_total") == 1
        assert value(fams, "bridge_kiosk_wakes_total", source="vad") == 1
        assert value(fams, "bridge_kiosk_reconnects_total") == 1
        assert value(fams, "bridge_kiosk_response_latency_seconds_count") == 2
        assert value(fams, "bridge_kiosk_response_latency_seconds_sum") == pytest.approx(1.55)
        assert value(fams, "bridge_kiosk_response_latency_seconds_bucket", le="0.8") == 1
        assert value(fams, "bridge_kiosk_response_latency_seconds_bucket", le="1.0") == 2
        assert value(fams, "bridge_kiosk_bargein_seconds_bucket", le="0.15") == 1
        assert value(fams, "bridge_kiosk_mic_overflows_total") == 2
        assert value(fams, "bridge_kiosk_playout_underruns_total") == 1
        assert value(fams, "bridge_kiosk_aec_state", bridge_kiosk_aec_state="on") == 1
        assert value(fams, "bridge_kiosk_aec_erle_db") == 18.5
        assert value(fams, "bridge_kiosk_device_present", role="input") == 1
        assert value(fams, "bridge_kiosk_state", bridge_kiosk_state="idle") == 1
        assert value(fams, "bridge_kiosk_budget_remaining_seconds") == 600
        assert value(fams, "bridge_kiosk_uptime_seconds") >= 0
        # live values: the next scrape sees changes without any push
        remaining[0] = 12.0
        status.set_state(KioskState.BUDGET_SPENT, "budget")
        async with http.get(server.url + "/metrics") as resp:
            fams = families(await resp.text())
        assert value(fams, "bridge_kiosk_budget_remaining_seconds") == 12
        assert value(fams, "bridge_kiosk_state", bridge_kiosk_state="budget_spent") == 1


async def test_healthz_is_503_when_the_microphone_went_silent() -> None:
    now = [0.0]
    status = KioskStatus(clock=lambda: now[0], mic_stale_s=10)
    status.mic_alive()
    now[0] = 30.0
    async with serve_health(status, port=0) as server, aiohttp.ClientSession() as http:
        async with http.get(server.url + "/healthz") as resp:
            assert resp.status == 503
            doc = await resp.json()
    assert doc["healthy"] is False and doc["reason"] == "no microphone frame for 30 s"


async def test_two_kiosks_do_not_share_counters() -> None:
    a, b = KioskStatus(), KioskStatus()
    a.on_reconnect()
    async with serve_health(a, port=0) as sa, serve_health(b, port=0) as sb, aiohttp.ClientSession() as http:
        async with http.get(sa.url + "/metrics") as resp:
            assert value(families(await resp.text()), "bridge_kiosk_reconnects_total") == 1
        async with http.get(sb.url + "/metrics") as resp:
            assert value(families(await resp.text()), "bridge_kiosk_reconnects_total") == 0


async def test_a_busy_port_is_a_config_error() -> None:
    status = KioskStatus()
    async with serve_health(status, port=0) as server:
        with pytest.raises(ConfigError, match="cannot listen on 127.0.0.1"):
            async with serve_health(status, port=server.port):
                pass


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126, exclude_characters="?#%"), max_size=40))
async def test_any_other_path_is_a_clean_404(path: str) -> None:
    status = KioskStatus()
    async with serve_health(status, port=0) as server, aiohttp.ClientSession() as http:
        async with http.get(server.url + "/" + path.lstrip("/")) as resp:
            if path.strip("/") in ("healthz", "metrics"):
                assert resp.status == 200
            else:
                assert resp.status in (404, 405), (path, resp.status)
