"""`python serve.py speculative=ngram` and `speculative=draft_model` (the target as its own
draft) with the official openai client: greedy completions, streamed and not, equal the
offline engine's without speculation (text and token counts; fp32, 32 prompts at once, chunked
prefill, a KV cache small enough to preempt), usage is exact, /metrics and the stats line
report the acceptance, and the bench's serve mode reads it."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.entrypoints.openai.remote_server import RemoteServer
from tests.metrics.conftest import scrape
from tests.spec_decode.test_spec_decode_llm import COMMON, _prompts
from vllm_hydra import LLM, SamplingParams
from vllm_hydra.benchmarks.server_spec_metrics import scrape_spec_counters, spec_decode_metrics

MAX_TOKENS = 12


@pytest.fixture(scope="module", params=["ngram", "draft_model"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RemoteServer]:
    remote = RemoteServer(
        tmp_path_factory.mktemp("spec") / "run",
        *COMMON,
        f"speculative={request.param}",
        "observability.stats_interval_s=1",
        wait=False,
    )
    remote.wait_until_healthy(timeout_s=300)  # fp32 start-up on a shared machine
    yield remote
    remote.stop()


@pytest.fixture(scope="module")
def reference() -> list[tuple[str, int]]:
    """(text, number of tokens) per prompt, offline and without speculation."""
    llm = LLM([*COMMON, "speculative=none"])
    params = SamplingParams(temperature=0.0, max_tokens=MAX_TOKENS, ignore_eos=True)
    outputs = llm.generate(_prompts(), params, use_tqdm=False)
    return [(o.outputs[0].text, len(o.outputs[0].token_ids)) for o in outputs]


def _body() -> dict:
    return {
        "model": "tiny",
        "prompt": _prompts(),
        "max_tokens": MAX_TOKENS,
        "temperature": 0.0,
        "extra_body": {"ignore_eos": True},
    }


def test_greedy_completions_equal_no_speculation(server: RemoteServer, reference) -> None:
    response = server.client().completions.create(**_body())
    choices = sorted(response.choices, key=lambda c: c.index)
    assert len({text for text, _ in reference}) > 16, "reference outputs must vary"
    assert [c.text for c in choices] == [text for text, _ in reference]
    assert response.usage.completion_tokens == sum(n for _, n in reference)
    assert all(c.finish_reason == "length" for c in choices)


def test_streamed_completions_equal_no_speculation(server: RemoteServer, reference) -> None:
    stream = server.client().completions.create(**_body(), stream=True)
    texts: dict[int, str] = {}
    for chunk in stream:
        for choice in chunk.choices:
            texts[choice.index] = texts.get(choice.index, "") + choice.text
    assert [texts[i] for i in range(len(reference))] == [text for text, _ in reference]


def test_metrics_and_stats_line_report_acceptance(server: RemoteServer) -> None:
    samples = scrape(server)
    drafts = samples["vllm:spec_decode_num_drafts_total"]
    draft_tokens = samples["vllm:spec_decode_num_draft_tokens_total"]
    accepted = samples["vllm:spec_decode_num_accepted_tokens_total"]
    name = "vllm:spec_decode_num_accepted_tokens_per_pos_total"
    per_pos = [samples[f"{name}{{position={i}}}"] for i in range(3)]
    assert drafts > 0 and 0 < accepted <= draft_tokens <= 3 * drafts
    assert sum(per_pos) == accepted and per_pos[0] >= per_pos[1] >= per_pos[2]
    deadline = time.monotonic() + 30
    while "Spec decode: mean acceptance length" not in server.output():
        assert time.monotonic() < deadline, server.output()[-2000:]
        time.sleep(0.5)


def test_bench_serve_mode_reads_the_acceptance_from_metrics(server: RemoteServer) -> None:
    """scripts/bench.py in serve mode: acceptance from the counters between two scrapes."""
    samples = scrape(server)
    drafts = samples["vllm:spec_decode_num_drafts_total"]
    accepted = samples["vllm:spec_decode_num_accepted_tokens_total"]
    draft_tokens = samples["vllm:spec_decode_num_draft_tokens_total"]
    counters = scrape_spec_counters(server.url)
    assert counters == {
        "num_drafts": drafts,
        "num_draft_tokens": draft_tokens,
        "num_accepted_tokens": accepted,
    }
    metrics = spec_decode_metrics({}, counters)
    assert metrics["spec_acceptance_rate"] == pytest.approx(accepted / draft_tokens)
    assert metrics["spec_mean_acceptance_length"] == pytest.approx(1 + accepted / drafts)
    assert spec_decode_metrics(counters, counters)["spec_num_drafts"] == 0
