"""Incremental detokenization and stop strings, one request at a time.

Text grows token by token without ever splitting a multi-byte character: `tokenizers`'
`DecodeStream` holds back bytes until they form valid UTF-8.
"""

from __future__ import annotations

from tokenizers.decoders import DecodeStream
from transformers import PreTrainedTokenizerBase

from vllm_hydra.sampling_params import SamplingParams


class IncrementalDetokenizer:
    def __init__(self, tokenizer: PreTrainedTokenizerBase | None, params: SamplingParams) -> None:
        self.tokenizer = tokenizer
        self.backend = getattr(tokenizer, "backend_tokenizer", None)
        self.stream = DecodeStream(skip_special_tokens=params.skip_special_tokens)
        self.skip_special_tokens = params.skip_special_tokens
        self.stop = params.stop
        self.include_stop = params.include_stop_str_in_output
        self.text = ""
        self.token_ids: list[int] = []
        self.num_new_consumed = 0  # of the last update's tokens (see update)

    def update(self, new_token_ids: list[int]) -> str | None:
        """Append tokens; return the stop string if one now appears (the text is cut there).

        Several tokens can come at once (speculative decoding): the stop strings are checked
        after each, and the tokens after the one that completes a stop string are dropped;
        `num_new_consumed` says how many were kept.
        """
        self.num_new_consumed = len(new_token_ids)
        start = len(self.text)
        for i, token_id in enumerate(new_token_ids):
            self.token_ids.append(token_id)
            self.text += self._decode_next(token_id)
            if self.stop and len(new_token_ids) > 1 and (stop := self._check_stop(start)):
                self.num_new_consumed = i + 1
                return stop
        return self._check_stop(start)

    def _decode_next(self, token_id: int) -> str:
        if self.tokenizer is None:  # model.skip_tokenizer_init: token ids only
            return ""
        if self.backend is not None:
            return self.stream.step(self.backend, token_id) or ""
        text = self.tokenizer.decode(self.token_ids, skip_special_tokens=self.skip_special_tokens)
        return "" if text.endswith("\ufffd") else text[len(self.text) :]

    def _check_stop(self, new_from: int) -> str | None:
        """Find the earliest stop string that ends in the new text, and cut the text there."""
        hits = []
        for stop in self.stop:
            index = self.text.find(stop, max(new_from - len(stop) + 1, 0))
            if index != -1:
                hits.append((index, stop))
        if not hits:
            return None
        index, stop = min(hits)
        self.text = self.text[: index + len(stop) if self.include_stop else index]
        return stop
