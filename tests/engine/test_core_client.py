"""SyncMPClient: the engine in its own process gives what the in-process engine gives, answers
UTILITY calls, and reports its death instead of hanging; it leaves no process behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import psutil
import pytest

from tests.engine.conftest import TINY, child_pids, is_gone, wait_until
from vllm_hydra import LLM, SamplingParams
from vllm_hydra.config.vllm import VllmConfig
from vllm_hydra.engine.core_client import SyncMPClient
from vllm_hydra.engine.exceptions import EngineDeadError
from vllm_hydra.engine.messages import EngineCoreRequest

PROMPTS = ["Once upon a time", "The LORD said unto Moses", "A fool and his money"]


def test_engine_process_gives_the_inprocess_greedy_outputs(tiny_config: VllmConfig) -> None:
    params = [
        SamplingParams(temperature=0.0, max_tokens=12, ignore_eos=True),
        SamplingParams(temperature=0.0, max_tokens=7, stop=[" the"]),
        SamplingParams(n=2, temperature=1.0, seed=3, max_tokens=9, logprobs=2),
    ]
    expected = LLM(tiny_config).generate(PROMPTS, params, use_tqdm=False)
    llm = LLM(tiny_config, use_engine_process=True)
    try:
        got = llm.generate(PROMPTS, params, use_tqdm=False)
    finally:
        llm.shutdown()
    for a, b in zip(expected, got, strict=True):
        assert [(c.text, c.token_ids, c.finish_reason) for c in a.outputs] == [
            (c.text, c.token_ids, c.finish_reason) for c in b.outputs
        ]
        assert a.outputs[0].token_ids


def test_utility_calls_and_clean_shutdown(tiny_config: VllmConfig) -> None:
    before = child_pids()
    client = SyncMPClient(tiny_config)
    pid = client.engine_pid
    assert pid is not None and pid not in before and client.num_gpu_blocks > 0
    assert client.max_model_len == tiny_config.model.max_model_len
    os.kill(pid, signal.SIGINT)  # Ctrl-C is the frontend's to handle, not the engine's
    stats = client.call_utility("get_stats")
    assert stats["num_running"] == 0 and stats["kv_cache_usage"] == 0.0
    assert client.call_utility("reset_prefix_cache") is True
    with pytest.raises(RuntimeError, match="no_such_method"):
        client.call_utility("no_such_method")
    client.shutdown()
    assert is_gone(pid) and not client.errored
    assert child_pids() <= before


def test_sigkill_of_the_engine_is_reported_not_waited_on(tiny_config: VllmConfig) -> None:
    client = SyncMPClient(tiny_config)
    try:
        os.kill(client.engine_pid, signal.SIGKILL)
        assert wait_until(lambda: client.errored, timeout_s=5)
        with pytest.raises(EngineDeadError, match="exited with code -9"):
            client.get_output()
        with pytest.raises(EngineDeadError):
            client.call_utility("get_stats")
    finally:
        client.shutdown()


ORPHAN_SCRIPT = textwrap.dedent(
    """
    import sys, time
    from vllm_hydra.config.compose import compose_config
    from vllm_hydra.engine.core_client import SyncMPClient

    if __name__ == "__main__":
        client = SyncMPClient(compose_config(sys.argv[1:]))
        print(client.engine_pid, flush=True)
        time.sleep(600)
    """
)


def test_engine_exits_when_its_parent_is_killed(tmp_path) -> None:
    script = tmp_path / "parent.py"
    script.write_text(ORPHAN_SCRIPT)
    parent = subprocess.Popen(
        [sys.executable, str(script), *TINY],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=os.getcwd(),
    )
    try:
        engine_pid = int(parent.stdout.readline())  # type: ignore[union-attr]
        assert psutil.pid_exists(engine_pid)
        parent.kill()
        parent.wait()
        assert wait_until(lambda: is_gone(engine_pid), timeout_s=5)
    finally:
        parent.kill()
        parent.wait()


def test_a_fatal_engine_error_sends_the_dead_frame(tiny_config: VllmConfig) -> None:
    client = SyncMPClient(tiny_config)
    try:
        # Past the InputProcessor's checks: a token id outside the vocabulary crashes the model.
        bad = EngineCoreRequest(
            request_id="bad",
            prompt_token_ids=[10**6],
            sampling_params=SamplingParams(max_tokens=2),
            eos_token_id=2,
            arrival_time=0.0,
        )
        client.add_request(bad)
        # Usually the dead frame tells first; under load the process monitor may.
        with pytest.raises(EngineDeadError, match=r"ENGINE_CORE_DEAD|exited with code 1"):
            client.get_output()
        assert wait_until(lambda: is_gone(client.engine_pid), timeout_s=10)
        # psutil sees it gone before it is reaped, and the client's monitor thread may be
        # reaping it at this moment (its waitpid won; ours got ECHILD): wait for the code.
        proc = client.engine_manager.proc
        assert wait_until(lambda: proc.exitcode is not None, timeout_s=10)
        assert proc.exitcode == 1
    finally:
        client.shutdown()
