"""Workloads: seeded, lengths in range, prefixes shared, sharegpt's file errors."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from vllm_hydra.benchmarks.workloads import FIRST_RANDOM_TOKEN_ID, make_workload
from vllm_hydra.config.bench import BenchStructuredOutput, WorkloadConfig, WorkloadName
from vllm_hydra.config.errors import ConfigError

VOCAB = 1000


def test_random_workload_is_seeded_and_in_range() -> None:
    cfg = WorkloadConfig(
        num_requests=50,
        input_len_min=5,
        input_len_max=9,
        output_len_min=2,
        output_len_max=4,
        seed=3,
    )
    requests = make_workload(cfg, VOCAB)
    assert requests == make_workload(cfg, VOCAB)
    assert requests != make_workload(replace(cfg, seed=4), VOCAB)
    assert len(requests) == 50
    assert {len(r.prompt_token_ids) for r in requests} == set(range(5, 10))
    assert {r.output_len for r in requests} == {2, 3, 4}
    ids = [t for r in requests for t in r.prompt_token_ids]
    assert min(ids) >= FIRST_RANDOM_TOKEN_ID and max(ids) < VOCAB


def test_prefix_workload_shares_prefixes() -> None:
    cfg = WorkloadConfig(
        name=WorkloadName.prefix,
        num_requests=9,
        prefix_len=20,
        num_prefixes=3,
        input_len_min=4,
        input_len_max=6,
    )
    requests = make_workload(cfg, VOCAB)
    prefixes = [tuple(r.prompt_token_ids[:20]) for r in requests]
    assert len(set(prefixes)) == 3
    assert prefixes[0] == prefixes[3] == prefixes[6] != prefixes[1]
    assert all(24 <= len(r.prompt_token_ids) <= 26 for r in requests)


def test_bad_ranges_name_the_keys() -> None:
    with pytest.raises(ConfigError, match=r"bench\.workload\.input_len_min=9 and input_len_max=5"):
        make_workload(WorkloadConfig(input_len_min=9, input_len_max=5), VOCAB)


def test_sharegpt_without_a_path_says_how_to_set_it() -> None:
    cfg = WorkloadConfig(name=WorkloadName.sharegpt)
    with pytest.raises(ConfigError, match=r"bench\.workload\.dataset_path is not set"):
        make_workload(cfg, VOCAB, str.split)


def test_sharegpt_missing_file(tmp_path: Path) -> None:
    cfg = WorkloadConfig(name=WorkloadName.sharegpt, dataset_path=str(tmp_path / "no.json"))
    with pytest.raises(ConfigError, match=r"no\.json: no such file"):
        make_workload(cfg, VOCAB, str.split)


def _sharegpt_file(tmp_path: Path) -> Path:
    data = [
        {"conversations": [{"from": "human", "value": "a b c"}, {"from": "gpt", "value": "x y"}]},
        {"conversations": [{"from": "human", "value": "only one turn"}]},
        {"conversations": [{"from": "human", "value": "d e"}, {"from": "gpt", "value": "z " * 9}]},
    ]
    path = tmp_path / "sharegpt.json"
    path.write_text(json.dumps(data))
    return path


def test_sharegpt_reads_first_turns(tmp_path: Path) -> None:
    cfg = WorkloadConfig(
        name=WorkloadName.sharegpt,
        dataset_path=str(_sharegpt_file(tmp_path)),
        num_requests=2,
        input_len_min=1,
        output_len_min=3,
        output_len_max=5,
    )
    vocab = {w: i for i, w in enumerate("abcdexyz")}
    requests = make_workload(cfg, VOCAB, lambda text: [vocab[w] for w in text.split()])
    assert sorted(len(r.prompt_token_ids) for r in requests) == [2, 3]
    # Reply lengths 2 and 9, clipped to 3..5.
    assert sorted(r.output_len for r in requests) == [3, 5]


def test_sharegpt_needs_a_tokenizer_and_enough_conversations(tmp_path: Path) -> None:
    cfg = WorkloadConfig(
        name=WorkloadName.sharegpt,
        dataset_path=str(_sharegpt_file(tmp_path)),
        num_requests=5,
        input_len_min=1,
    )
    with pytest.raises(ConfigError, match="needs a tokenizer"):
        make_workload(cfg, VOCAB, None)
    with pytest.raises(ConfigError, match="holds only 2 usable conversations"):
        make_workload(cfg, VOCAB, str.split)


def test_json_workload_is_the_free_one_with_a_schema() -> None:
    """The same prompts and lengths; every request's schema needs more items than any request
    may generate tokens, so none can close its JSON (and stop) early."""
    cfg = WorkloadConfig(num_requests=8, output_len_min=3, output_len_max=9)
    free = make_workload(cfg, VOCAB)
    structured = make_workload(replace(cfg, structured_output=BenchStructuredOutput.json), VOCAB)
    assert [(r.prompt_token_ids, r.output_len) for r in structured] == [
        (r.prompt_token_ids, r.output_len) for r in free
    ]
    assert all(r.json_schema is None for r in free)
    schemas = {r.json_schema for r in structured}
    assert len(schemas) == 1
    schema = json.loads(schemas.pop() or "")
    assert schema["properties"]["values"]["minItems"] == 9


def test_repeat_workload_repeats_one_span() -> None:
    from vllm_hydra.benchmarks.workloads import make_workload
    from vllm_hydra.config.bench import WorkloadConfig, WorkloadName

    cfg = WorkloadConfig(
        name=WorkloadName.repeat, num_requests=4, num_repeats=3, input_len_min=30, input_len_max=40
    )
    requests = make_workload(cfg, vocab_size=4096)
    for r in requests:
        ids, n = r.prompt_token_ids, len(r.prompt_token_ids) // 3
        assert len(ids) % 3 == 0 and ids == ids[:n] * 3
        assert len(set(ids[:n])) > n // 2  # a random span, not one token
    assert len({tuple(r.prompt_token_ids) for r in requests}) == 4


def test_spec_speedup_divides_by_the_speculative_none_job() -> None:
    from vllm_hydra.benchmarks.summary import add_spec_speedup

    rows = [
        {"overrides": "bench=repeat speculative=none", "output_throughput": 10.0},
        {"overrides": "bench=repeat speculative=ngram", "output_throughput": 25.0},
        {"overrides": "bench=random speculative=ngram", "output_throughput": 5.0},
    ]
    add_spec_speedup(rows)
    assert [r.get("spec_speedup") for r in rows] == [1.0, 2.5, None]
