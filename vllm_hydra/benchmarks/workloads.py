"""Benchmark workloads: lists of token-id prompts with the output length each must produce.

Prompts are token ids, not text, so every backend (this engine offline or over HTTP, and the
transformers baselines) sees exactly the same input, and models without a tokenizer
(model=bench-125m) can be measured. Output lengths are enforced with `ignore_eos`.
"""

from __future__ import annotations

import dataclasses
import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from vllm_hydra.config.bench import BenchStructuredOutput, WorkloadConfig, WorkloadName
from vllm_hydra.config.errors import ConfigError

# Ids below this are left out of random prompts (pad, BOS and EOS in Llama-style vocabularies).
FIRST_RANDOM_TOKEN_ID = 3


@dataclass(frozen=True)
class BenchRequest:
    prompt_token_ids: list[int]
    output_len: int
    json_schema: str | None = None  # the output's JSON schema (bench.workload.structured_output)


Tokenize = Callable[[str], list[int]]


def make_workload(
    cfg: WorkloadConfig, vocab_size: int, tokenize: Tokenize | None = None
) -> list[BenchRequest]:
    """The requests of `cfg`, the same for the same seed. `tokenize` is needed for sharegpt."""
    _check_ranges(cfg)
    rng = random.Random(cfg.seed)
    if cfg.name is WorkloadName.random:
        requests = random_workload(cfg, vocab_size, rng)
    elif cfg.name is WorkloadName.prefix:
        requests = prefix_workload(cfg, vocab_size, rng)
    elif cfg.name is WorkloadName.repeat:
        requests = repeat_workload(cfg, vocab_size, rng)
    else:
        requests = sharegpt_workload(cfg, tokenize, rng)
    if cfg.structured_output is BenchStructuredOutput.json:
        schema = json.dumps(open_json_schema(cfg.output_len_max))
        requests = [dataclasses.replace(r, json_schema=schema) for r in requests]
    return requests


def open_json_schema(max_output_len: int) -> dict:
    """`{"values": [<int>, ...]}` with at least `max_output_len` items: every item takes at
    least two tokens (digits, comma), so no request can close the JSON before its output
    length, and EOS stays masked out: constrained and free requests generate the same counts."""
    return {
        "type": "object",
        "properties": {
            "values": {
                "type": "array",
                "items": {"type": "integer", "minimum": 0, "maximum": 999},
                "minItems": max_output_len,
            }
        },
        "required": ["values"],
        "additionalProperties": False,
    }


def _check_ranges(cfg: WorkloadConfig) -> None:
    problems = []
    if cfg.num_requests < 1:
        problems.append("bench.workload.num_requests must be at least 1.")
    for name in ("input_len", "output_len"):
        low, high = getattr(cfg, f"{name}_min"), getattr(cfg, f"{name}_max")
        if not 1 <= low <= high:
            problems.append(
                f"bench.workload.{name}_min={low} and {name}_max={high}: need "
                f"1 <= {name}_min <= {name}_max."
            )
    if cfg.name is WorkloadName.prefix and (cfg.prefix_len < 1 or cfg.num_prefixes < 1):
        problems.append(
            "bench.workload.prefix_len and num_prefixes must be at least 1 for the prefix workload."
        )
    if cfg.name is WorkloadName.repeat and not 2 <= cfg.num_repeats <= cfg.input_len_min:
        problems.append(
            f"bench.workload.num_repeats={cfg.num_repeats}: need 2 <= num_repeats <= "
            f"input_len_min={cfg.input_len_min} for the repeat workload."
        )
    if problems:
        raise ConfigError(problems)


def _random_ids(rng: random.Random, n: int, vocab_size: int) -> list[int]:
    return [rng.randrange(FIRST_RANDOM_TOKEN_ID, vocab_size) for _ in range(n)]


def random_workload(cfg: WorkloadConfig, vocab_size: int, rng: random.Random) -> list[BenchRequest]:
    requests = []
    for _ in range(cfg.num_requests):
        input_len = rng.randint(cfg.input_len_min, cfg.input_len_max)
        output_len = rng.randint(cfg.output_len_min, cfg.output_len_max)
        requests.append(BenchRequest(_random_ids(rng, input_len, vocab_size), output_len))
    return requests


def prefix_workload(cfg: WorkloadConfig, vocab_size: int, rng: random.Random) -> list[BenchRequest]:
    """Request i starts with prefix i % num_prefixes, then its own random suffix."""
    prefixes = [_random_ids(rng, cfg.prefix_len, vocab_size) for _ in range(cfg.num_prefixes)]
    requests = []
    for i in range(cfg.num_requests):
        suffix_len = rng.randint(cfg.input_len_min, cfg.input_len_max)
        output_len = rng.randint(cfg.output_len_min, cfg.output_len_max)
        prompt = prefixes[i % cfg.num_prefixes] + _random_ids(rng, suffix_len, vocab_size)
        requests.append(BenchRequest(prompt, output_len))
    return requests


def repeat_workload(cfg: WorkloadConfig, vocab_size: int, rng: random.Random) -> list[BenchRequest]:
    """Each prompt: one random span repeated num_repeats times (about input_len tokens), so
    the continuation a model predicts copies the span: what prompt lookup can propose."""
    requests = []
    for _ in range(cfg.num_requests):
        input_len = rng.randint(cfg.input_len_min, cfg.input_len_max)
        output_len = rng.randint(cfg.output_len_min, cfg.output_len_max)
        span = _random_ids(rng, input_len // cfg.num_repeats, vocab_size)
        requests.append(BenchRequest(span * cfg.num_repeats, output_len))
    return requests


def sharegpt_workload(
    cfg: WorkloadConfig, tokenize: Tokenize | None, rng: random.Random
) -> list[BenchRequest]:
    """The first human turn of shuffled conversations as prompts; the reply's length (clipped
    to the output range) as the output length. Prompts outside the input range are skipped."""
    conversations = _load_sharegpt(cfg.dataset_path)
    if tokenize is None:
        raise ConfigError(
            "bench=sharegpt needs a tokenizer to turn the conversations into token ids; this "
            "model has none (model.skip_tokenizer_init=true). Use a model with a tokenizer or "
            "set model.tokenizer."
        )
    rng.shuffle(conversations)
    requests = []
    for turns in conversations:
        prompt = tokenize(turns[0]["value"])
        if not cfg.input_len_min <= len(prompt) <= cfg.input_len_max:
            continue
        reply_len = len(tokenize(turns[1]["value"]))
        output_len = min(max(reply_len, cfg.output_len_min), cfg.output_len_max)
        requests.append(BenchRequest(prompt, output_len))
        if len(requests) == cfg.num_requests:
            return requests
    raise ConfigError(
        f"bench.workload.dataset_path={cfg.dataset_path} holds only {len(requests)} usable "
        f"conversations (input length {cfg.input_len_min}-{cfg.input_len_max} tokens) for "
        f"bench.workload.num_requests={cfg.num_requests}. Lower num_requests or widen the range."
    )


def _load_sharegpt(path: str | None) -> list[list[dict[str, str]]]:
    """The conversations with at least two turns, each a list of {"from", "value"} dicts."""
    if not path:
        raise ConfigError(
            "bench.workload.dataset_path is not set: the sharegpt workload reads a ShareGPT-format "
            "JSON file you supply (no download). Set bench.workload.dataset_path=/path/to.json."
        )
    file = Path(path).expanduser()
    if not file.is_file():
        raise ConfigError(
            f"bench.workload.dataset_path={path}: no such file. Point it at a ShareGPT-format "
            f"JSON file (a list of {{'conversations': [{{'from': ..., 'value': ...}}, ...]}})."
        )
    try:
        data = json.loads(file.read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"bench.workload.dataset_path={path}: cannot read JSON: {e}") from e
    return [
        entry["conversations"]
        for entry in data
        if isinstance(entry, dict) and len(entry.get("conversations") or []) >= 2
    ]
