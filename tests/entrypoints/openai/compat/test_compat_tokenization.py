"""vLLM's tests/entrypoints/serve/tokenize/test_tokenization.py: /tokenize and /detokenize in
the completion and chat forms, token_strs; /tokenizer_info is in test_compat_root_path.py (it
is off by default, as in vLLM)."""

from __future__ import annotations

import httpx
import pytest
from transformers import AutoTokenizer

from tests.entrypoints.openai.compat.compat_helpers import ok, post
from tests.entrypoints.openai.remote_server import REPO, RemoteServer

pytestmark = pytest.mark.compat

TEXT = "This is a test prompt about a cat."
TOKENIZER = AutoTokenizer.from_pretrained(REPO / "vllm_hydra/assets/tiny-llama")


@pytest.mark.parametrize("add_special_tokens", [True, False])
def test_tokenize_and_detokenize_round_trip(server: RemoteServer, add_special_tokens: bool) -> None:
    reply = ok(server, "/tokenize", prompt=TEXT, add_special_tokens=add_special_tokens)
    expected = TOKENIZER.encode(TEXT, add_special_tokens=add_special_tokens)
    assert reply["tokens"] == expected and reply["count"] == len(expected)
    assert reply["max_model_len"] == 2048
    text = ok(server, "/detokenize", tokens=reply["tokens"])["prompt"]
    assert text == TOKENIZER.decode(expected)


def test_tokenize_chat_form(server: RemoteServer) -> None:
    messages = [{"role": "user", "content": TEXT}, {"role": "assistant", "content": "Yes."}]
    for add_generation_prompt in (True, False):
        reply = ok(
            server, "/tokenize", messages=messages, add_generation_prompt=add_generation_prompt
        )
        expected = TOKENIZER.apply_chat_template(
            messages, tokenize=True, add_generation_prompt=add_generation_prompt
        )
        expected = list(expected["input_ids"] if hasattr(expected, "keys") else expected)
        assert reply["tokens"] == expected


def test_token_strs(server: RemoteServer) -> None:
    reply = ok(server, "/tokenize", prompt=TEXT, return_token_strs=True)
    assert reply["token_strs"] == TOKENIZER.convert_ids_to_tokens(reply["tokens"])
    assert ok(server, "/tokenize", prompt=TEXT).get("token_strs") is None


def test_empty_messages_is_a_400_not_a_500(server: RemoteServer) -> None:
    response = post(server, "/tokenize", messages=[])
    assert response.status_code == 400 and response.json()["error"]["param"] == "messages"


def test_tokenizer_info_is_off_by_default(server: RemoteServer) -> None:
    response = httpx.get(f"{server.url}/tokenizer_info", timeout=10)
    assert response.status_code == 404 and "error" in response.json()
