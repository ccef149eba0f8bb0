"""Small deterministic tools the shipped example agents use (offline: no network, same answer every time).

They double as examples of the tool conventions: type hints become the JSON schema, the docstring's
first line the description, ``Annotated[..., "text"]`` a parameter's description.
"""

from __future__ import annotations

import hashlib
from typing import Annotated, Literal

_CONDITIONS = ("sunny", "partly cloudy", "cloudy", "light rain", "windy", "clear")


def get_weather(
    city: Annotated[str, "City name, e.g. 'Seoul' or 'Paris'"],
    unit: Literal["celsius", "fahrenheit"] = "celsius",
) -> dict[str, object]:
    """Current weather for a city (offline demo data: the same city always gives the same weather)."""
    digest = hashlib.sha256(city.strip().lower().encode("utf-8")).digest()
    celsius = digest[0] % 30 - 2
    temp = celsius if unit == "celsius" else round(celsius * 9 / 5 + 32)
    return {
        "city": city.strip(),
        "temperature": temp,
        "unit": unit,
        "conditions": _CONDITIONS[digest[1] % len(_CONDITIONS)],
        "note": "demo data, not a real forecast",
    }


def record_emotion_score(
    emotion: Annotated[str, "The emotion in the user's own words, e.g. 'anxious', '불안'"],
    score: Annotated[int, "How strong it feels right now, 0 (not at all) to 100 (overwhelming)"],
    moment: Literal["before", "after"] = "before",
) -> dict[str, object]:
    """Note how strong an emotion feels (0-100) before or after an exercise, to reflect the change back."""
    if not 0 <= score <= 100:
        raise ValueError("score must be between 0 and 100")
    return {"emotion": emotion, "score": score, "moment": moment, "recorded": True}


def crisis_resources(
    country: Annotated[str, "ISO country code if known, e.g. 'KR'; empty when unknown"] = "",
) -> dict[str, object]:
    """Emergency and crisis-line numbers to give a user who may be in danger."""
    if country.strip().upper() in ("KR", "KOR", "KOREA", "SOUTH KOREA"):
        return {
            "country": "KR",
            "suicide_prevention_line": "109",
            "police": "112",
            "fire_and_ambulance": "119",
            "note": "All free, 24 hours. In immediate danger call 112 or 119.",
        }
    return {
        "country": country or "unknown",
        "advice": "Call your local emergency number (for example 112 in the EU, 911 in the US and Canada, "
        "999 in the UK) or go to the nearest emergency department.",
    }
