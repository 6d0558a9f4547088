"""RequestOutputCollector: a consumer that falls behind gets DELTA outputs merged and other
kinds replaced by the newest; an error ends the request."""

from __future__ import annotations

import pytest

from vllm_hydra.engine.output_collector import RequestOutputCollector
from vllm_hydra.request_output import CompletionOutput, RequestOutput
from vllm_hydra.sampling_params import RequestOutputKind

pytestmark = pytest.mark.asyncio


def _output(*completions: tuple[int, str, list[int]], finished: bool = False) -> RequestOutput:
    outputs = [CompletionOutput(index=i, text=t, token_ids=ids) for i, t, ids in completions]
    return RequestOutput("r", None, [1], outputs=outputs, finished=finished)


async def test_delta_outputs_merge_while_the_consumer_is_away() -> None:
    collector = RequestOutputCollector(RequestOutputKind.DELTA)
    collector.put(_output((0, "Once", [7])))
    collector.put(_output((1, " a", [8])))
    collector.put(_output((0, " upon", [9]), (1, " b", [10]), finished=True))
    merged = await collector.get()
    assert merged.finished
    assert [(c.index, c.text, c.token_ids) for c in merged.outputs] == [
        (0, "Once upon", [7, 9]),
        (1, " a b", [8, 10]),
    ]


async def test_cumulative_outputs_keep_only_the_newest() -> None:
    collector = RequestOutputCollector(RequestOutputKind.CUMULATIVE)
    collector.put(_output((0, "Once", [7])))
    collector.put(_output((0, "Once upon", [7, 9])))
    assert (await collector.get()).outputs[0].text == "Once upon"


async def test_an_error_wins_over_pending_outputs() -> None:
    collector = RequestOutputCollector(RequestOutputKind.DELTA)
    collector.put(_output((0, "Once", [7])))
    collector.put(RuntimeError("engine died"))
    collector.put(_output((0, " more", [8])))
    with pytest.raises(RuntimeError, match="engine died"):
        await collector.get()
