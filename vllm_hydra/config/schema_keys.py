"""Unknown config keys, checked against the schema dataclasses with a did-you-mean.

Hydra's own message for a typo (`Key 'tpp' not in 'ParallelConfig'`) suggests `+parallel.tpp=`,
which the frozen schema cannot take; this names the closest real keys instead. It runs on the
command line before Hydra composes, and on a composed config before it becomes dataclasses.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Iterator
from typing import Any

from omegaconf import DictConfig

# Top-level names that select a config group option rather than set a key.
GROUP_NAMES = ("profile", "local", "hparams_search", "hydra")


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _section_type(hint: Any) -> type | None:
    """The dataclass behind a field's type (`X | None` included), else None."""
    if dataclasses.is_dataclass(hint):
        return hint  # type: ignore[return-value]
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return next((a for a in typing.get_args(hint) if dataclasses.is_dataclass(a)), None)
    return None


def _is_open_mapping(hint: Any) -> bool:
    """dict-typed fields (`hf_overrides`, `adapters`) take any key below them."""
    return hint is dict or typing.get_origin(hint) is dict or hint is Any


def unknown_key_problem(root: type, dotted: str) -> str | None:
    """None when `dotted` names a schema key (or a key inside a dict field); else the message."""
    cls, parts = root, dotted.split(".")
    for depth, name in enumerate(parts):
        hints = _field_types(cls)
        if name not in hints:
            return _did_you_mean(".".join(parts[:depth]), name, list(hints))
        hint = hints[name]
        if _is_open_mapping(hint):
            return None
        section = _section_type(hint)
        if section is None:
            if depth + 1 < len(parts):
                return f"{'.'.join(parts[: depth + 1])} is a value, not a section with keys."
            return None
        cls = section
    return None


def _did_you_mean(parent: str, name: str, keys: list[str]) -> str:
    full = f"{parent}.{name}" if parent else name
    where = f"the {parent} section" if parent else "the config root"
    close = difflib.get_close_matches(name, keys, n=3, cutoff=0.6)
    prefix = f"{parent}." if parent else ""
    hint = f" Did you mean {' or '.join(prefix + k for k in close)}?" if close else ""
    return (
        f"{full} is not a config key: {where} has no key '{name}', and the schema takes no "
        f"new keys (not with + either).{hint} Valid keys: {', '.join(keys)}."
    )


def override_problems(root: type, overrides: list[str]) -> list[str]:
    """Problems with command-line overrides (`parallel.tpp=4`, `+model.quantization=awq`)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import OverrideType
    from hydra.errors import OverrideParseException

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except OverrideParseException as e:
        return [
            f"{e.override}: not a valid override ({e.message}). Write one key=value per "
            f"argument; quote values with spaces or special characters, e.g. key='a b'."
        ]
    problems = []
    for override in parsed:
        key = override.key_or_group
        if override.type is OverrideType.DEL or override.package is not None:
            continue
        if key.split(".")[0].split("/")[0] in GROUP_NAMES or "/" in key:
            continue
        if "." not in key and _section_type(_field_types(root).get(key)) is not None:
            continue  # a group choice such as model=llama3
        problem = unknown_key_problem(root, key)
        if problem:
            problems.append(problem)
    return problems


def composed_key_problems(root: type, cfg: DictConfig) -> list[str]:
    """Keys in a composed config that the schema lacks (added by `+key=` or a YAML file)."""
    return [p for key in _leaf_keys(cfg) if (p := unknown_key_problem(root, key))]


def _leaf_keys(cfg: DictConfig, prefix: str = "") -> Iterator[str]:
    for key in cfg:
        if key == "hydra":
            continue
        node = cfg._get_node(key)
        full = f"{prefix}{key}"
        if isinstance(node, DictConfig) and not node._is_missing() and not node._is_none():
            children = list(_leaf_keys(node, f"{full}."))
            yield from children or [full]
        else:
            yield full
