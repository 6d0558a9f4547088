"""`model.chat_template`: a Jinja file or an inline template, checked before any weight loads.

As vLLM's `--chat-template`: a value that names a file is read from it; one that holds template
syntax (`{`, `}` or a newline) is the template itself; anything else is a path that is not
there. The template is compiled the way `transformers` renders it, so a syntax error is
refused at start-up instead of failing every chat request.
"""

from __future__ import annotations

from pathlib import Path

from vllm_hydra.config.vllm import VllmConfig

_TEMPLATE_CHARS = ("{", "}", "\n")


class ChatTemplateError(ValueError):
    pass


def load_chat_template(value: str) -> str:
    """The template text of `model.chat_template` (a path or the template itself)."""
    path = Path(value).expanduser()
    try:
        if path.is_file():
            return path.read_text()
    except OSError as e:  # a name too long to be a path, a directory without access
        if not any(c in value for c in _TEMPLATE_CHARS):
            raise ChatTemplateError(f"cannot be read: {e}") from e
    if any(c in value for c in _TEMPLATE_CHARS):
        return value
    raise ChatTemplateError(
        f"looks like a file path, but {path} is not a file (an inline template holds "
        f"Jinja syntax such as {{{{ or {{%)"
    )


def compile_chat_template(text: str) -> None:
    """Raise ChatTemplateError for a template `transformers` could not compile."""
    import jinja2
    from transformers.utils.chat_template_utils import _compile_jinja_template

    try:
        _compile_jinja_template(text)
    except jinja2.TemplateError as e:
        line = f" (line {e.lineno})" if getattr(e, "lineno", None) else ""
        raise ChatTemplateError(f"is not a valid Jinja template{line}: {str(e).rstrip('.')}") from e


def check_chat_template(c: VllmConfig) -> list[str]:
    value = c.model.chat_template
    if value is None:
        return []
    try:
        compile_chat_template(load_chat_template(value))
    except ChatTemplateError as e:
        shown = value if len(value) <= 60 else value[:57] + "..."
        return [
            f"model.chat_template={shown!r} {e}. Point model.chat_template at a Jinja file, "
            f"or give the template inline, e.g. model.chat_template='{{% for m in messages %}}"
            f"{{{{ m.content }}}}{{% endfor %}}'."
        ]
    if c.model.skip_tokenizer_init:
        return [
            "model.chat_template is set but model.skip_tokenizer_init=true: without a "
            "tokenizer there is no chat endpoint to use it. Drop one of the two."
        ]
    return []
