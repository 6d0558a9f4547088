"""AsyncLLM against a real engine process: the three output kinds agree, n > 1 fans in,
cancelling frees the request's KV blocks, and engine death ends in-flight requests."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from tests.engine.conftest import child_pids, is_gone
from vllm_hydra.config.vllm import VllmConfig
from vllm_hydra.engine.async_llm import AsyncLLM
from vllm_hydra.engine.exceptions import EngineDeadError, EngineRequestError
from vllm_hydra.request_output import RequestOutput
from vllm_hydra.sampling_params import RequestOutputKind, SamplingParams, SamplingParamsError

pytestmark = pytest.mark.asyncio(loop_scope="module")

PROMPT = "Once upon a time"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def llm(tiny_config: VllmConfig) -> AsyncIterator[AsyncLLM]:
    engine = AsyncLLM.from_vllm_config(tiny_config)
    yield engine
    engine.shutdown()


async def _collect(
    llm: AsyncLLM, request_id: str, kind: RequestOutputKind, **params: object
) -> list[RequestOutput]:
    sampling = SamplingParams(output_kind=kind, **params)  # type: ignore[arg-type]
    prompt_ids = llm.input_processor.tokenize(PROMPT)
    return [o async for o in llm.generate(prompt_ids, sampling, request_id, prompt=PROMPT)]


async def test_delta_chunks_add_up_to_the_cumulative_and_final_text(llm: AsyncLLM) -> None:
    common = dict(temperature=0.0, max_tokens=24, ignore_eos=True)
    cumulative = await _collect(llm, "cum", RequestOutputKind.CUMULATIVE, **common)
    delta = await _collect(llm, "delta", RequestOutputKind.DELTA, **common)
    final = await _collect(llm, "final", RequestOutputKind.FINAL_ONLY, **common)
    assert len(final) == 1 and final[0].finished and len(delta) > 1 and len(cumulative) > 1
    text, token_ids = final[0].outputs[0].text, final[0].outputs[0].token_ids
    assert len(token_ids) == 24 and text
    assert cumulative[-1].outputs[0].text == text
    assert "".join(o.outputs[0].text for o in delta) == text
    assert [t for o in delta for t in o.outputs[0].token_ids] == token_ids
    assert all(not o.finished for o in delta[:-1]) and delta[-1].finished
    assert delta[-1].outputs[0].finish_reason == "length"
    texts = [o.outputs[0].text for o in cumulative]
    assert all(b.startswith(a) for a, b in itertools.pairwise(texts))


async def test_delta_holds_back_a_possible_stop_string(llm: AsyncLLM) -> None:
    (reference,) = await _collect(
        llm, "ref", RequestOutputKind.FINAL_ONLY, temperature=0.0, max_tokens=24, ignore_eos=True
    )
    text = reference.outputs[0].text
    stop = text[len(text) // 2 : len(text) // 2 + 3]
    assert len(stop) == 3
    params = dict(temperature=0.0, max_tokens=24, ignore_eos=True, stop=[stop])
    delta = await _collect(llm, "stop", RequestOutputKind.DELTA, **params)
    expected = text[: text.find(stop)]
    assert "".join(o.outputs[0].text for o in delta) == expected
    assert delta[-1].outputs[0].finish_reason == "stop"
    assert delta[-1].outputs[0].stop_reason == stop


async def test_n_sequences_stream_and_fan_in(llm: AsyncLLM) -> None:
    params = dict(n=2, temperature=1.0, seed=11, max_tokens=10, ignore_eos=True)
    (final,) = await _collect(llm, "n2", RequestOutputKind.FINAL_ONLY, **params)
    assert [c.index for c in final.outputs] == [0, 1]
    assert final.outputs[0].token_ids != final.outputs[1].token_ids
    delta = await _collect(llm, "n2-delta", RequestOutputKind.DELTA, **params)
    for completion in final.outputs:
        chunks = [c for o in delta for c in o.outputs if c.index == completion.index]
        assert "".join(c.text for c in chunks) == completion.text
        assert [t for c in chunks for t in c.token_ids] == completion.token_ids
    assert all(len({c.index for c in o.outputs}) == len(o.outputs) for o in delta)


async def test_validation_fails_on_first_next_before_sending(llm: AsyncLLM) -> None:
    stream = llm.generate([5, 6, 7], SamplingParams(temperature=-1.0), "bad")
    with pytest.raises(SamplingParamsError) as err:
        await stream.__anext__()
    assert err.value.param == "temperature"
    stream = llm.generate([5, 6, 7], SamplingParams(n=0), "bad-n")
    with pytest.raises(SamplingParamsError, match="n=0"):
        await stream.__anext__()
    assert (await llm.get_stats())["num_waiting"] == 0


async def test_cancelling_generate_frees_the_requests_blocks(llm: AsyncLLM) -> None:
    params = SamplingParams(n=2, max_tokens=2000, ignore_eos=True, temperature=1.0)
    prompt_ids = llm.input_processor.tokenize(PROMPT)
    started = asyncio.Event()

    async def consume() -> None:
        async for _ in llm.generate(prompt_ids, params, "long"):
            started.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(started.wait(), timeout=30)
    busy = await llm.get_stats()
    assert busy["num_running"] + busy["num_waiting"] == 2 and busy["kv_cache_usage"] > 0
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    stats = await llm.get_stats()  # the engine handles the ABORT before this UTILITY call
    assert stats["num_running"] == 0 and stats["num_waiting"] == 0
    assert stats["kv_cache_usage"] == 0.0
    # The same id can be used again, and the engine still serves.
    again = await _collect(llm, "long", RequestOutputKind.FINAL_ONLY, max_tokens=3)
    assert again[-1].finished


async def test_engine_death_ends_in_flight_requests(tiny_config: VllmConfig) -> None:
    before = child_pids()
    engine = AsyncLLM.from_vllm_config(tiny_config)
    pid = engine.engine_core.engine_pid
    try:
        params = SamplingParams(max_tokens=100000, ignore_eos=True)
        stream = engine.generate([5, 6, 7], params, "doomed")
        await stream.__anext__()
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(EngineDeadError):
            async with asyncio.timeout(5):
                async for _ in stream:
                    pass
        assert engine.errored and isinstance(engine.dead_error, EngineDeadError)
        with pytest.raises(EngineDeadError):
            await engine.generate([5, 6, 7], params, "late").__anext__()
        with pytest.raises(EngineDeadError):
            await engine.get_stats()
    finally:
        engine.shutdown()
    assert is_gone(pid) and child_pids() <= before


async def test_a_request_the_engine_refuses_fails_alone(
    llm: AsyncLLM, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The injected fault: the frontend's checks are skipped, so a prompt longer than
    max_model_len reaches the engine, whose scheduler refuses it. Only that request fails; one
    running beside it finishes and the next request succeeds."""
    prompt_ids = llm.input_processor.tokenize(PROMPT)
    beside = asyncio.create_task(
        _collect(llm, "beside", RequestOutputKind.FINAL_ONLY, max_tokens=40, ignore_eos=True)
    )
    monkeypatch.setattr(llm.input_processor, "_validate", lambda *_: None)
    too_long = [5] * (llm.vllm_config.model.max_model_len + 10)
    for n in (1, 2):  # with n=2 both children are refused; the request fails once
        stream = llm.generate(too_long, SamplingParams(n=n, max_tokens=4), f"refused-{n}")
        with pytest.raises(EngineRequestError, match="exceeds max_model_len"):
            async with asyncio.timeout(10):
                async for _ in stream:
                    pass
    monkeypatch.undo()
    assert not llm.errored
    (done,) = await beside
    assert done.finished and len(done.outputs[0].token_ids) == 40
    after = [o async for o in llm.generate(prompt_ids, SamplingParams(max_tokens=3), "after")]
    assert after[-1].finished and len(after[-1].outputs[0].token_ids) == 3
    stats = await llm.get_stats()
    assert stats["num_running"] == 0 and stats["num_waiting"] == 0
