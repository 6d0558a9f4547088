"""The waiting queues: FCFS with prepend, and priority ordered by (priority, arrival)."""

from __future__ import annotations

from sched_harness import make_request

from vllm_hydra.config import SchedulerPolicy
from vllm_hydra.core.request_queue import (
    FCFSRequestQueue,
    PriorityRequestQueue,
    create_request_queue,
)


def test_fcfs_keeps_arrival_order_and_prepends_preempted() -> None:
    queue = create_request_queue(SchedulerPolicy.fcfs)
    assert isinstance(queue, FCFSRequestQueue)
    a, b, c = (make_request(x, [1], arrival_time=t) for t, x in enumerate("abc"))
    queue.add_request(a)
    queue.add_request(b)
    queue.prepend_request(c)
    assert [r.request_id for r in queue] == ["c", "a", "b"]
    queue.remove_request(a)
    assert queue.pop_request() is c and queue.peek_request() is b and len(queue) == 1


def test_priority_orders_by_value_then_arrival() -> None:
    queue = create_request_queue(SchedulerPolicy.priority)
    assert isinstance(queue, PriorityRequestQueue)
    requests = [
        make_request("late-urgent", [1], arrival_time=5.0, priority=0),
        make_request("early-low", [1], arrival_time=1.0, priority=2),
        make_request("early-urgent", [1], arrival_time=2.0, priority=0),
        make_request("tie", [1], arrival_time=2.0, priority=0),
    ]
    for request in requests:
        queue.add_request(request)
    order = ["early-urgent", "tie", "late-urgent", "early-low"]
    assert [r.request_id for r in queue] == order
    queue.remove_request(requests[2])
    assert [queue.pop_request().request_id for _ in range(3)] == order[1:]
    assert len(queue) == 0
