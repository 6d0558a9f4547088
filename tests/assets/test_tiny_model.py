"""Checks on the embedded default model in ``vllm_hydra/assets/tiny-llama``.

The model is produced by ``scripts/train_tiny_model.py``. These tests load it offline with plain
``transformers`` and check that it is small, that its special tokens and chat template are as
documented, and that a greedy continuation is made of real English words (words that occur at
least three times in the training corpus, listed in ``tests/data/english_words.txt``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
ASSET_DIR = REPO_ROOT / "vllm_hydra" / "assets" / "tiny-llama"
WORD_LIST = REPO_ROOT / "tests" / "data" / "english_words.txt"
PROMPT = "Once upon a time"
NEW_TOKENS = 24


@pytest.fixture(scope="module")
def loaded() -> tuple[Any, Any]:
    """The tokenizer and model, loaded from the asset folder with the Hub switched off."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        patch.setenv("TRANSFORMERS_OFFLINE", "1")
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(ASSET_DIR, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(ASSET_DIR, local_files_only=True)
    model.eval()
    return tokenizer, model


@pytest.fixture(scope="module")
def continuation(loaded: tuple[Any, Any]) -> str:
    """The greedy continuation of PROMPT: NEW_TOKENS tokens, special tokens dropped."""
    import torch

    tokenizer, model = loaded
    inputs = tokenizer(PROMPT, return_tensors="pt")
    # min_new_tokens keeps eos from ending the text early, so exactly NEW_TOKENS are judged (left
    # alone, this model stops after 14 tokens: ", it is a day of life. -- Walt Kelly").
    with torch.no_grad():
        output = model.generate(
            **inputs, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False
        )
    return tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)


def test_files_are_small_and_bfloat16() -> None:
    weights = ASSET_DIR / "model.safetensors"
    assert weights.stat().st_size < 20 * 1024 * 1024
    config = json.loads((ASSET_DIR / "config.json").read_text())
    assert config["dtype"] == "bfloat16"
    assert config["model_type"] == "llama"
    generation = json.loads((ASSET_DIR / "generation_config.json").read_text())
    assert (generation["bos_token_id"], generation["eos_token_id"]) == (1, 2)
    assert generation["pad_token_id"] == 0


def test_special_token_ids(loaded: tuple[Any, Any]) -> None:
    tokenizer, model = loaded
    assert (tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id) == (0, 1, 2)
    config = model.config
    assert (config.pad_token_id, config.bos_token_id, config.eos_token_id) == (0, 1, 2)
    assert tokenizer(PROMPT)["input_ids"][0] == 1
    roles = ["<|system|>", "<|user|>", "<|assistant|>"]
    assert tokenizer.convert_tokens_to_ids(roles) == [3, 4, 5]


def test_chat_template(loaded: tuple[Any, Any]) -> None:
    tokenizer, _ = loaded
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Tell me a fortune."},
        {"role": "assistant", "content": "You will be fine."},
        {"role": "user", "content": "Another one."},
    ]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text == (
        "<|bos|><|system|>\nBe brief.\n<|user|>\nTell me a fortune.\n"
        "<|assistant|>\nYou will be fine.<|eos|>\n<|user|>\nAnother one.\n<|assistant|>\n"
    )
    ids = tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=True)
    ids = ids["input_ids"] if not isinstance(ids, list) else ids
    assert ids == tokenizer(text, add_special_tokens=False)["input_ids"]
    assert ids[:2] == [1, 3]
    assert ids.count(2) == 1


def test_greedy_continuation_is_english(continuation: str) -> None:
    english = set(WORD_LIST.read_text(encoding="utf-8").split())
    words = [word.lower() for word in re.findall(r"[A-Za-z]+", continuation)]
    assert len(words) >= 8, continuation
    assert len(set(words)) > 1, continuation
    known = [word for word in words if word in english]
    assert len(known) >= 0.9 * len(words), (continuation, sorted(set(words) - english))
