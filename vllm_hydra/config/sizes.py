"""Human-readable sizes for the keys that are sizes: token counts (`32k`) and bytes (`4GiB`).

As vLLM's command line: a token count takes a lowercase suffix for powers of 1000 (`32k` =
32,000) and an uppercase one for powers of 1024 (`32K` = 32,768). A byte size takes SI units
(`KB`, `MB`, `GB`: powers of 1000) or binary ones (`KiB`, `MiB`, `GiB`, and `K`, `M`, `G`: powers
of 1024). The schema types these keys `Any`; `parse_sizes` turns them into numbers before any
rule reads them, and refuses what is not a size with the key and an example.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import fields, replace
from typing import Any, TypeVar

T = TypeVar("T")

GIB = 1 << 30

# model.max_model_len=auto (or -1, as vLLM): the largest length the KV cache holds, capped by
# the model's own limit.
MAX_MODEL_LEN_AUTO = -1

_DECIMAL = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}
_BINARY = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_TOKENS = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgtKMGT]?)\s*$")
_BYTE_UNITS = {
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 1 << 10,
    "mib": 1 << 20,
    "gib": 1 << 30,
    "tib": 1 << 40,
}
_BYTES = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


class SizeError(ValueError):
    """A value that is not a size; the message names the key and an example."""


def parse_token_count(key: str, value: Any, also: str = "") -> int | None:
    """`2048`, `"32k"` (32,000), `"32K"` (32,768), `"1.5k"`; None stays None."""
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    match = _TOKENS.match(value) if isinstance(value, str) else None
    number = None
    if match:
        scale = _DECIMAL.get(match[2]) or _BINARY[match[2]]
        number = float(match[1]) * scale
    if number is None or not number.is_integer():
        raise SizeError(
            f"{key}={value!r} is not a token count. Write an integer, or one with a suffix: "
            f"{key}=32k (32,000) or {key}=32K (32,768); lowercase k/m/g are powers of 1000, "
            f"uppercase K/M/G powers of 1024{also}."
        )
    return int(number)


def parse_bytes(key: str, value: Any, unit: int = 1) -> float | None:
    """A size in multiples of `unit` bytes: a plain number is already in that unit
    (`cache.kv_cache_memory_gib=4`), a string may carry its own (`"512MiB"`, `"4GB"`)."""
    if value is None or (isinstance(value, int | float) and not isinstance(value, bool)):
        return value
    match = _BYTES.match(value) if isinstance(value, str) else None
    scale = _byte_scale(match[2]) if match else None
    if match is None or scale is None:
        unit_name = "bytes" if unit == 1 else "GiB"
        raise SizeError(
            f"{key}={value!r} is not a size. Write a number (in {unit_name}) or one with a "
            f"unit: {key}=512MiB, {key}=4GiB or {key}=4GB (KiB/MiB/GiB are powers of 1024, "
            f"KB/MB/GB powers of 1000)."
        )
    return float(match[1]) * (scale or unit) / unit


def _byte_scale(suffix: str) -> int | None:
    """0 for no suffix (the key's own unit), else the bytes per unit; None: not a unit."""
    if not suffix:
        return 0
    if suffix in _BINARY:
        return _BINARY[suffix]
    return _BYTE_UNITS.get(suffix.lower())


def parse_max_model_len(key: str, value: Any) -> int | None:
    """`auto` or -1: MAX_MODEL_LEN_AUTO; otherwise a token count."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return MAX_MODEL_LEN_AUTO
    return parse_token_count(key, value, f"; or {key}=auto for what the KV cache holds")


def parse_gib(key: str, value: Any) -> float | None:
    parsed = parse_bytes(key, value, GIB)
    return None if parsed is None else float(parsed)


def parse_byte_count(key: str, value: Any) -> int | None:
    parsed = parse_bytes(key, value)
    return None if parsed is None else int(parsed)


# (section, field, parser): the keys that are sizes.
SIZE_KEYS: tuple[tuple[str, str, Callable[[str, Any], Any]], ...] = (
    ("model", "max_model_len", parse_max_model_len),
    ("scheduler", "max_num_batched_tokens", parse_token_count),
    ("scheduler", "long_prefill_token_threshold", parse_token_count),
    ("cache", "kv_cache_memory_gib", parse_gib),
    ("device", "memory_gib", parse_gib),
    ("server", "max_request_body_bytes", parse_byte_count),
)


def parse_sizes(sections: T) -> tuple[T, list[str]]:
    """The sections with every size key as a number, and the problems of those that are not
    (each such key falls back to its schema default, so the other rules still run)."""
    problems: list[str] = []
    changed: dict[str, Any] = {}
    for section, name, parse in SIZE_KEYS:
        node = changed.get(section, getattr(sections, section))
        try:
            value = parse(f"{section}.{name}", getattr(node, name))
        except SizeError as e:
            problems.append(str(e))
            value = _schema_default(node, name)
        changed[section] = replace(node, **{name: value})
    return replace(sections, **changed), problems  # type: ignore[type-var]


def _schema_default(node: Any, name: str) -> Any:
    field = next(f for f in fields(node) if f.name == name)
    return field.default
