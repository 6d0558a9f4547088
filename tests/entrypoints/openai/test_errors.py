"""Error shapes: field paths from pydantic locations, OpenAI's wording for too-long prompts."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from fastapi.exceptions import RequestValidationError

from vllm_hydra.entrypoints.openai.errors import (
    BadRequestError,
    NotFoundError,
    request_validation_error,
    validation_param,
)
from vllm_hydra.entrypoints.openai.serving_engine import OpenAIServing


@pytest.mark.parametrize(
    ("loc", "param"),
    [
        (("body", "max_tokens"), "max_tokens"),
        (("body", "messages", 0, "role"), "messages.0.role"),
        (("body", "prompt", "str"), "prompt"),
        (("body", "prompt", "list[int]", 2), "prompt.2"),
        (("body",), None),
    ],
)
def test_validation_param_is_the_field_path(loc: tuple, param: str | None) -> None:
    assert validation_param(loc) == param


def test_malformed_json_has_no_param() -> None:
    exc = RequestValidationError([{"type": "json_invalid", "loc": ("body", 3), "msg": "bad"}])
    error = request_validation_error(exc)
    assert error.status_code == 400 and error.param is None
    assert error.to_response().model_dump()["error"]["type"] == "invalid_request_error"


def test_not_found_shape() -> None:
    body = NotFoundError("The model `x` does not exist.", "model", "model_not_found")
    assert body.to_response().model_dump() == {
        "error": {
            "message": "The model `x` does not exist.",
            "type": "invalid_request_error",
            "param": "model",
            "code": "model_not_found",
        }
    }


def serving(max_model_len: int, prompt_param: str) -> OpenAIServing:
    model = SimpleNamespace(max_model_len=max_model_len)
    engine = SimpleNamespace(vllm_config=SimpleNamespace(model=model))
    instance = OpenAIServing(engine, models=None)  # type: ignore[arg-type]
    instance.prompt_param = prompt_param
    return instance


def test_too_long_prompt_uses_openai_wording() -> None:
    with pytest.raises(BadRequestError) as info:
        serving(100, "messages").check_length(120, 10, "max_completion_tokens")
    assert info.value.param == "messages" and info.value.code == "context_length_exceeded"
    assert str(info.value) == (
        "This model's maximum context length is 100 tokens. However, you requested 130 tokens "
        "(120 in the messages, 10 in the completion). Please reduce the length of the messages "
        "or completion."
    )


def test_too_many_output_tokens_names_max_tokens() -> None:
    with pytest.raises(BadRequestError) as info:
        serving(100, "prompt").check_length(60, 41, "max_tokens")
    assert info.value.param == "max_tokens" and "(60 in the prompt, 41 in the completion)" in str(
        info.value
    )


def test_unset_max_tokens_fills_the_context() -> None:
    assert serving(100, "prompt").check_length(60, None, "max_tokens") == 40
    assert serving(100, "prompt").check_length(60, 40, "max_tokens") == 40
