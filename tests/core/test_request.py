"""Request and RequestStatus."""

from __future__ import annotations

from vllm_hydra.core.request import Request, RequestStatus
from vllm_hydra.engine.messages import EngineCoreRequest, FinishReason
from vllm_hydra.sampling_params import SamplingParams


def test_from_engine_core_request_copies_every_field() -> None:
    params = SamplingParams(max_tokens=None, min_tokens=2)
    message = EngineCoreRequest(
        "r", [5, 6, 7], params, eos_token_id=2, arrival_time=3.5, priority=4
    )
    request = Request.from_engine_core_request(message)
    assert (request.request_id, request.prompt_token_ids) == ("r", [5, 6, 7])
    assert request.sampling_params is params and request.max_tokens is None
    assert (request.eos_token_id, request.arrival_time, request.priority) == (2, 3.5, 4)
    assert request.status == RequestStatus.WAITING
    assert request.num_computed_tokens == 0 and request.num_cached_tokens == -1
    request.prompt_token_ids.append(8)
    assert message.prompt_token_ids == [5, 6, 7]  # the request owns its lists


def test_token_counts_follow_appended_outputs() -> None:
    request = Request("r", [1, 2, 3], SamplingParams(), eos_token_id=None)
    request.append_output_token_ids(4)
    request.append_output_token_ids([5, 6])
    assert request.output_token_ids == [4, 5, 6]
    assert request.all_token_ids == [1, 2, 3, 4, 5, 6]
    assert (request.num_tokens, request.num_prompt_tokens, request.num_output_tokens) == (6, 3, 3)
    assert request.prompt_token_ids == [1, 2, 3]


def test_finished_statuses_and_reasons() -> None:
    expected = {
        RequestStatus.WAITING: None,
        RequestStatus.RUNNING: None,
        RequestStatus.PREEMPTED: None,
        RequestStatus.FINISHED_STOPPED: FinishReason.STOP,
        RequestStatus.FINISHED_LENGTH_CAPPED: FinishReason.LENGTH,
        RequestStatus.FINISHED_ABORTED: FinishReason.ABORT,
    }
    request = Request("r", [1], SamplingParams(), eos_token_id=None)
    for status, reason in expected.items():
        request.status = status
        assert request.is_finished() == (reason is not None)
        assert RequestStatus.is_finished(status) == (reason is not None)
        assert request.get_finished_reason() is reason
