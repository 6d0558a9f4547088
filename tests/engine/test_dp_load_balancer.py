"""`DPLoadBalancer`: least `4 x waiting + running` wins, local bumps between coordinator
updates, and aborts go to the engine that holds the request."""

from __future__ import annotations

from vllm_hydra.engine.dp_load_balancer import DPLoadBalancer
from vllm_hydra.engine.messages import DPLoads, EngineCoreOutput, EngineCoreOutputs, FinishReason


def test_requests_alternate_between_idle_engines() -> None:
    balancer = DPLoadBalancer(2)
    assert [balancer.assign(f"r{i}") for i in range(6)] == [0, 1, 0, 1, 0, 1]
    assert balancer.counts == [[3, 0], [3, 0]]


def test_a_waiting_request_weighs_four_running_ones() -> None:
    balancer = DPLoadBalancer(3)
    balancer.update(DPLoads(counts=[(1, 0), (0, 3), (0, 5)]))
    assert balancer.assign("a") == 1  # scores 4, 3, 5
    balancer.update(DPLoads(counts=[(1, 0), (0, 5), (0, 3)]))
    assert balancer.assign("b") == 2  # scores 4, 5, 3
    balancer.update(DPLoads(counts=[(1, 0), (0, 5), (0, 4)]))
    assert balancer.assign("c") == 0  # scores 4, 5, 4: a tie goes to the lowest index


def test_the_coordinator_snapshot_replaces_local_bumps() -> None:
    balancer = DPLoadBalancer(2)
    for i in range(4):
        balancer.assign(f"r{i}")
    balancer.update(DPLoads(counts=[(0, 2), (0, 0)]))
    assert balancer.counts == [[0, 2], [0, 0]]
    assert balancer.assign("next") == 1


def test_aborts_are_grouped_by_the_engine_that_holds_each_request() -> None:
    balancer = DPLoadBalancer(2)
    for request_id in ("a", "b", "c"):
        balancer.assign(request_id)  # a -> 0, b -> 1, c -> 0
    assert balancer.engines_holding(["a", "b", "c", "unknown"]) == {0: ["a", "c"], 1: ["b"]}
    assert balancer.engines_holding(["a"]) == {}  # already aborted


def test_finished_requests_are_forgotten() -> None:
    balancer = DPLoadBalancer(2)
    balancer.assign("done")
    balancer.assign("running")
    balancer.assign("dropped")
    balancer.track(
        EngineCoreOutputs(
            outputs=[
                EngineCoreOutput("done", [5], finish_reason=FinishReason.LENGTH),
                EngineCoreOutput("running", [7]),
            ],
            finished_requests={"dropped"},
        )
    )
    assert balancer.reqs_in_flight == {"running": 1}
