"""One `python serve.py` on the embedded tiny model, shared by the end-to-end test files."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.entrypoints.openai.remote_server import RemoteServer

MODEL = "tiny"


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RemoteServer]:
    remote = RemoteServer(tmp_path_factory.mktemp("serve") / "run")
    yield remote
    remote.stop()
