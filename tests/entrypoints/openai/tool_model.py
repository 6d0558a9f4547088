"""A copy of the embedded tiny model whose chat template shows tools: assistant tool calls and
`tool` messages rendered Hermes-style, in the tiny model's role markers. For messages without
tools it renders exactly as the embedded template does."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from vllm_hydra.config.store import asset_path

TOOL_TEMPLATE = """{{- bos_token }}
{%- if tools %}
    {{- '<|system|>\\nYou may call these functions, each as ' }}
    {{- '<tool_call>{"name": ..., "arguments": ...}</tool_call>:\\n' }}
    {%- for tool in tools %}{{- tool | tojson + '\\n' }}{%- endfor %}
{%- endif %}
{%- for message in messages %}
    {%- if message['role'] == 'tool' %}
        {{- '<|user|>\\n<tool_response>' + message['content'] + '</tool_response>\\n' }}
    {%- elif message['role'] == 'assistant' %}
        {{- '<|assistant|>\\n' + message['content'] }}
        {%- for call in message.get('tool_calls', []) %}
            {%- set function = call['function'] %}
            {%- set body = {'name': function['name'], 'arguments': function['arguments']} %}
            {{- '<tool_call>' + body | tojson + '</tool_call>' }}
        {%- endfor %}
        {{- eos_token + '\\n' }}
    {%- else %}
        {{- '<|' + message['role'] + '|>\\n' + message['content'] + '\\n' }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}{{- '<|assistant|>\\n' }}{%- endif %}"""


def write_tool_model(target: Path) -> Path:
    """The tiny model at `target`, its template in tokenizer_config.json (the classic place)."""
    shutil.copytree(asset_path("tiny-llama"), target)
    (target / "chat_template.jinja").unlink()
    config_path = target / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config_path.write_text(json.dumps({**config, "chat_template": TOOL_TEMPLATE}, indent=2))
    return target
