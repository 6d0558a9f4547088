"""`PromptLengthGuard`: refuse a prompt far over max_model_len before tokenizing all of it.

A token covers at most `max_token_chars` characters (the longest vocabulary entry), so a text
longer than that times max_model_len (with slack for normalizers that shrink text) cannot fit:
it is refused from its length alone, as vLLM refuses such prompts before tokenization. A long
text under that bound is counted in chunks, one tokenizer job each, so other requests'
tokenizations run in between and counting stops as soon as the prompt is known to be too long.
"""

from __future__ import annotations

from collections.abc import Iterator

from transformers import PreTrainedTokenizerBase

from vllm_hydra.entrypoints.openai.errors import BadRequestError

# Unicode normalizers (NFKC, Hangul composition) may shrink a text before it is tokenized, by
# at most this factor.
NORMALIZATION_SLACK = 4
# Texts longer than this are counted chunk by chunk before the exact tokenization.
COUNT_CHUNK_CHARS = 1 << 16
# Tokens a chunk boundary may add to a count (a word split in two, a merge lost).
BOUNDARY_SLACK_TOKENS = 4


def max_token_chars(tokenizer: PreTrainedTokenizerBase) -> int:
    """The most characters one token of `tokenizer` stands for (its longest vocabulary entry:
    byte-level and SentencePiece entries are at least as long as the text they decode to)."""
    return max((len(token) for token in tokenizer.get_vocab()), default=1)


def text_chunks(text: str, size: int = COUNT_CHUNK_CHARS) -> Iterator[str]:
    """`text` in pieces of about `size` characters, each cut before a space when one is near,
    so that a piece tokenizes as it would inside the whole text."""
    start = 0
    while start < len(text):
        end = min(start + size, len(text))
        if end < len(text):
            space = text.rfind(" ", start + size // 2, end)
            end = space if space > start else end
        yield text[start:end]
        start = end


class PromptLengthGuard:
    def __init__(self, tokenizer: PreTrainedTokenizerBase, max_model_len: int) -> None:
        self.max_model_len = max_model_len
        self.max_chars = NORMALIZATION_SLACK * max_token_chars(tokenizer) * max_model_len

    def check_chars(self, num_chars: int, param: str) -> None:
        """Refuse a text whose length alone proves it has more than max_model_len tokens."""
        if num_chars > self.max_chars:
            self.refuse(f"more than {self.max_model_len} tokens ({num_chars} characters)", param)

    def needs_count(self, text: str) -> bool:
        return len(text) > COUNT_CHUNK_CHARS

    def check_count(self, num_tokens: int, num_chunks: int, param: str) -> None:
        """Refuse once chunk counts prove the text too long (boundaries allowed for)."""
        if num_tokens - BOUNDARY_SLACK_TOKENS * num_chunks > self.max_model_len:
            self.refuse(f"about {num_tokens} tokens", param)

    def refuse(self, size: str, param: str) -> None:
        raise BadRequestError(
            f"This model's maximum context length is {self.max_model_len} tokens. However, "
            f"the {param} has {size}. Please reduce the length of the {param}.",
            param=param,
            code="context_length_exceeded",
        )
