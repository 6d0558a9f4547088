"""Request models: OpenAI's defaults, unknown fields accepted and logged, strict types."""

from __future__ import annotations

import logging

import pytest
from pydantic import ValidationError

from vllm_hydra.entrypoints.openai.protocol import ChatCompletionRequest, CompletionRequest


def test_unknown_fields_are_accepted_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        request = CompletionRequest(prompt="hi", metadata={"a": "b"}, functions=[])  # type: ignore[call-arg]
    assert request.model_extra == {"metadata": {"a": "b"}, "functions": []}
    assert "ignoring unknown fields ['functions', 'metadata']" in caplog.text


def test_completion_defaults_follow_openai() -> None:
    request = CompletionRequest(prompt=[1, 2, 3])
    assert request.max_tokens == 16 and request.n == 1 and request.temperature is None
    assert request.prompt == [1, 2, 3] and not request.stream


def test_chat_content_parts_join_as_text() -> None:
    request = ChatCompletionRequest(
        messages=[
            {
                "role": "user",
                "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
            }
        ]
    )
    assert request.messages[0].text() == "ab"
    assert request.max_completion_tokens is None and request.logprobs is False


@pytest.mark.parametrize(
    "fields",
    [
        {"messages": []},
        {"messages": [{"role": "", "content": "x"}]},  # any role but an empty one
        {"messages": [{"role": 5, "content": "x"}]},
        {"messages": [{"role": "user", "content": 5}]},
        {"messages": [{"role": "user", "content": "x"}], "n": "two"},
    ],
)
def test_chat_rejects_bad_shapes(fields: dict) -> None:
    with pytest.raises(ValidationError):
        ChatCompletionRequest(**fields)
