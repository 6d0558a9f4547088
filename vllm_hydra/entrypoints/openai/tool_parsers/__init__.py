"""Tool parsers (vLLM's entrypoints/openai/tool_parsers): importing this package registers the
built-in ones with `ToolParserManager`."""

from vllm_hydra.entrypoints.openai.tool_parsers.abstract_tool_parser import (
    ToolParser,
    ToolParserManager,
)
from vllm_hydra.entrypoints.openai.tool_parsers.hermes_tool_parser import Hermes2ProToolParser
from vllm_hydra.entrypoints.openai.tool_parsers.llama_tool_parser import Llama3JsonToolParser

__all__ = ["Hermes2ProToolParser", "Llama3JsonToolParser", "ToolParser", "ToolParserManager"]
