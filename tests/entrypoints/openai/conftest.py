"""Servers shared by the end-to-end test files: `python serve.py` on the embedded tiny model, and
one for structured outputs and tool calling."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.entrypoints.openai.remote_server import RemoteServer
from tests.entrypoints.openai.tool_model import write_tool_model

MODEL = "tiny"


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RemoteServer]:
    remote = RemoteServer(tmp_path_factory.mktemp("serve") / "run")
    yield remote
    remote.stop()


# Compact JSON (structured_outputs.disable_any_whitespace): with free whitespace between JSON
# tokens the tiny model can emit tabs until max_tokens, as any grammar-unaware model may.
STRUCTURED_OVERRIDES = (
    "structured_outputs.disable_any_whitespace=true",
    "server.enable_auto_tool_choice=true",
    "server.tool_call_parser=hermes",
    "cache.kv_cache_memory_gib=0.25",
)


@pytest.fixture(scope="session")
def tool_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tool_model(tmp_path_factory.mktemp("tool-model") / "tiny-tools")


@pytest.fixture(scope="session")
def structured_server(
    tmp_path_factory: pytest.TempPathFactory, tool_model_dir: Path
) -> Iterator[RemoteServer]:
    """The tiny model with a tool-aware chat template, compact JSON and the hermes parser."""
    run_dir = tmp_path_factory.mktemp("structured") / "run"
    remote = RemoteServer(run_dir, f"model.path={tool_model_dir}", *STRUCTURED_OVERRIDES)
    yield remote
    remote.stop()
