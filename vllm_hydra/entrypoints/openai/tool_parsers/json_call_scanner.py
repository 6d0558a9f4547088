"""`scan_call`: read a tool call's JSON object, `{"name": ..., "arguments": ...}`, as far as the
model has written it, so a stream can announce the name and send the arguments as they grow."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

_DECODER = json.JSONDecoder()
_WHITESPACE = re.compile(r"[ \t\n\r]*")


@dataclass
class ScannedCall:
    name: str | None = None  # set once the name's string is complete
    arguments: str | None = None  # the arguments value's text so far, as the model wrote it
    arguments_done: bool = False
    end: int | None = None  # the index after the closing brace; None: still open
    invalid: bool = False  # not a JSON object of this shape, however it goes on


def skip_whitespace(text: str, index: int) -> int:
    match = _WHITESPACE.match(text, index)
    return match.end() if match else index


def _decode(text: str, index: int) -> tuple[object, int | None]:
    """The JSON value at `index` and the index after it; (None, None) while it is incomplete.
    A number at the very end may still grow, so it counts as incomplete."""
    try:
        value, end = _DECODER.raw_decode(text, index)
    except json.JSONDecodeError:
        return None, None
    if (
        end == len(text)
        and text[index] not in '{["'
        and text[index:end] not in ("true", "false", "null")
    ):
        return None, None
    return value, end


def scan_call(text: str, start: int, argument_keys: tuple[str, ...]) -> ScannedCall:
    """Scan the object that opens at `text[start]` (a "{")."""
    call = ScannedCall()
    index = skip_whitespace(text, start + 1)
    if text.startswith("}", index):
        call.end = index + 1
        return call
    while index < len(text):
        key, index_after = _decode(text, index)
        if index_after is None:
            call.invalid = text[index] != '"'
            return call
        if not isinstance(key, str):
            call.invalid = True
            return call
        index = skip_whitespace(text, index_after)
        if index >= len(text):
            return call
        if text[index] != ":":
            call.invalid = True
            return call
        index = skip_whitespace(text, index + 1)
        if index >= len(text):
            return call
        value, value_end = _decode(text, index)
        if key in argument_keys:
            call.arguments = text[index : len(text) if value_end is None else value_end]
            call.arguments_done = value_end is not None
        if value_end is None:
            return call
        if key == "name":
            call.name, call.invalid = (value, False) if isinstance(value, str) else (None, True)
        index = skip_whitespace(text, value_end)
        if index >= len(text):
            return call
        if text[index] == "}":
            call.end = index + 1
            return call
        if text[index] != ",":
            call.invalid = True
            return call
        index = skip_whitespace(text, index + 1)
    return call
