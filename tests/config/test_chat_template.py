"""model.chat_template: a Jinja file or an inline template, refused before weights load when bad."""

from __future__ import annotations

from pathlib import Path

import pytest

from vllm_hydra.config import ConfigError, compose_config
from vllm_hydra.tokenizer import get_tokenizer

TEMPLATE = "{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}"


def test_an_inline_template_is_what_chat_requests_render() -> None:
    config = compose_config([f"model.chat_template='{TEMPLATE}'"])
    tokenizer = get_tokenizer(config)
    messages = [{"role": "user", "content": "hi"}]
    assert tokenizer.apply_chat_template(messages, tokenize=False) == "<user>hi"


def test_a_template_file(tmp_path: Path) -> None:
    path = tmp_path / "chat.jinja"
    path.write_text(TEMPLATE)
    config = compose_config([f"model.chat_template={path}"])
    assert get_tokenizer(config).chat_template == TEMPLATE


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("'{% for m in messages %}'", "is not a valid Jinja template (line 1)"),
        ("/nonexistent/chat.jinja", "looks like a file path, but /nonexistent/chat.jinja"),
    ],
)
def test_a_bad_template_is_refused(write_checkpoint, value: str, words: str) -> None:
    with pytest.raises(ConfigError) as e:
        compose_config([f"model.path={write_checkpoint()}", f"model.chat_template={value}"])
    assert "model.chat_template=" in str(e.value) and words in str(e.value)
