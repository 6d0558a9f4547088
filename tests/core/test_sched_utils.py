"""check_stop: EOS, stop tokens, min_tokens, max_tokens and max_model_len."""

from __future__ import annotations

import pytest
from sched_harness import EOS, make_request

from vllm_hydra.core.request import Request, RequestStatus
from vllm_hydra.core.sched_utils import check_stop
from vllm_hydra.engine.messages import FinishReason

MAX_MODEL_LEN = 16


def _after(tokens: list[int], prompt_len: int = 3, **params: object) -> Request:
    """A request that has generated `tokens`; check_stop runs after each one."""
    request = make_request("r", list(range(10, 10 + prompt_len)), **params)
    for i, token in enumerate(tokens):
        request.append_output_token_ids(token)
        if check_stop(request, MAX_MODEL_LEN):
            assert i == len(tokens) - 1, f"stopped early at token {i}"
    return request


def test_eos_stops() -> None:
    request = _after([5, EOS])
    assert request.status == RequestStatus.FINISHED_STOPPED
    assert request.get_finished_reason() is FinishReason.STOP and request.stop_reason is None


def test_eos_ignored_with_ignore_eos() -> None:
    request = _after([5, EOS, 6], ignore_eos=True)
    assert not request.is_finished()


def test_no_eos_token_means_no_eos_stop() -> None:
    request = make_request("r", [1], eos_token_id=None)
    request.append_output_token_ids(EOS)
    assert not check_stop(request, MAX_MODEL_LEN)


def test_stop_token_sets_stop_reason() -> None:
    request = _after([5, 7], stop_token_ids=[7, 8])
    assert request.status == RequestStatus.FINISHED_STOPPED and request.stop_reason == 7


@pytest.mark.parametrize("stop", [EOS, 7])
def test_min_tokens_defers_eos_and_stop_tokens(stop: int) -> None:
    request = _after([stop, stop], min_tokens=3, stop_token_ids=[7])
    assert not request.is_finished()
    request = _after([stop, stop, stop], min_tokens=3, stop_token_ids=[7])
    assert request.status == RequestStatus.FINISHED_STOPPED


def test_max_tokens_caps_length() -> None:
    request = _after([5, 6, 7], max_tokens=3)
    assert request.status == RequestStatus.FINISHED_LENGTH_CAPPED
    assert request.get_finished_reason() is FinishReason.LENGTH


def test_eos_on_the_last_allowed_token_is_a_stop() -> None:
    request = _after([5, EOS], max_tokens=2)
    assert request.status == RequestStatus.FINISHED_STOPPED


def test_max_model_len_caps_length_even_under_min_tokens() -> None:
    # 13 prompt tokens + 3 outputs = 16 = max_model_len.
    request = _after([5, 6, 7], prompt_len=13, max_tokens=None, min_tokens=10)
    assert request.status == RequestStatus.FINISHED_LENGTH_CAPPED


def test_max_tokens_none_runs_to_max_model_len() -> None:
    request = _after([5] * 12, prompt_len=4, max_tokens=None)
    assert request.status == RequestStatus.FINISHED_LENGTH_CAPPED
    assert request.num_tokens == MAX_MODEL_LEN
