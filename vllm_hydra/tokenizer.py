"""Loading the tokenizer of a model with `transformers`, offline."""

from __future__ import annotations

from transformers import AutoTokenizer, PreTrainedTokenizerBase

from vllm_hydra.config.chat_template import load_chat_template
from vllm_hydra.config.errors import ConfigError
from vllm_hydra.config.model_files import resolve_model_dir
from vllm_hydra.config.vllm import VllmConfig


def get_tokenizer(config: VllmConfig) -> PreTrainedTokenizerBase | None:
    """The tokenizer at `model.tokenizer`, else the checkpoint's own; None when skipped."""
    model = config.model
    if model.skip_tokenizer_init:
        return None
    source = model.tokenizer or config.model_dir
    if source is None:
        raise ConfigError(
            f"model.path={model.path} has no tokenizer on this machine. Set model.tokenizer "
            f"to a local tokenizer directory, or model.skip_tokenizer_init=true to send "
            f"token ids."
        )
    directory = resolve_model_dir(source, model.revision, config.load.download_dir)
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            str(directory or source), trust_remote_code=model.trust_remote_code
        )
    except (OSError, ValueError) as e:
        raise ConfigError(f"model.tokenizer: cannot load a tokenizer from {source}: {e}") from e
    if model.chat_template is not None:  # checked by create_vllm_config
        tokenizer.chat_template = load_chat_template(model.chat_template)
    return tokenizer
