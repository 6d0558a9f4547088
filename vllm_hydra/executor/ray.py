"""`RayExecutor`: the same workers as `MultiprocExecutor`, as Ray actors (multi-node serving).

Each rank is an actor pinned to one bundle of a placement group (one GPU, or one CPU on CPU
runs), so the world may span every machine of a Ray cluster. The actors run the same
`WorkerProc` loop over the same control channel, reached over TCP on `parallel.master_addr`
(the engine's address as the other machines see it), and join torch.distributed there too.

Ray is an optional extra (`pip install 'vllm-hydra[ray]'`). The executor joins the cluster
that `RAY_ADDRESS` names (Ray's own convention, e.g. `RAY_ADDRESS=auto` on a cluster node), or
the instance this process already started, or else starts a local one.
"""

from __future__ import annotations

import contextlib
from typing import Any

import zmq

from vllm_hydra.config.device import DeviceType
from vllm_hydra.executor.multiproc import SHUTDOWN_TIMEOUT_S, MultiprocExecutor
from vllm_hydra.worker.worker_proc import SHUTDOWN, run_worker_proc

# How long the placement group may wait for the cluster to offer every bundle.
PLACEMENT_TIMEOUT_S = 120.0


class RayWorkerWrapper:
    """The actor class: `run` serves one rank until the executor says stop."""

    def run(self, **kwargs: Any) -> None:
        run_worker_proc(**kwargs, parent_pid=None)


class RayExecutor(MultiprocExecutor):
    actors: list[Any]
    run_refs: list[Any]
    placement_group: Any = None

    def _bind(self, sock: zmq.Socket, name: str) -> str:
        sock.setsockopt(zmq.SNDHWM, 0)
        sock.setsockopt(zmq.RCVHWM, 0)
        host = self.config.parallel.master_addr
        port = sock.bind_to_random_port(f"tcp://{host}")
        return f"tcp://{host}:{port}"

    def _start_workers(
        self, init_method: str, control_addresses: list[str], result_address: str
    ) -> None:
        import ray
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        self.actors, self.run_refs = [], []
        if not ray.is_initialized():
            ray.init()
        self._check_nodes(ray)
        on_gpu = self.config.device.type is DeviceType.cuda
        self.placement_group = _placement_group(ray, self.world_size, on_gpu)
        actor_class = ray.remote(RayWorkerWrapper)
        for rank in range(self.world_size):
            actor = actor_class.options(
                num_cpus=0 if on_gpu else 1,
                num_gpus=1 if on_gpu else 0,
                scheduling_strategy=PlacementGroupSchedulingStrategy(
                    self.placement_group, placement_group_bundle_index=rank
                ),
            ).remote()
            self.actors.append(actor)
            self.run_refs.append(
                actor.run.remote(
                    vllm_config=self.config,
                    rank=rank,
                    local_rank=0,  # Ray gives each actor its own CUDA_VISIBLE_DEVICES
                    distributed_init_method=init_method,
                    control_address=control_addresses[rank],
                    result_address=result_address,
                )
            )

    def _check_nodes(self, ray: Any) -> None:
        nnodes = self.config.parallel.nnodes
        alive = [n for n in ray.nodes() if n.get("Alive")]
        if len(alive) < nnodes:
            raise RuntimeError(
                f"parallel.nnodes={nnodes}, but the Ray cluster has {len(alive)} live node(s). "
                "Start Ray on every machine (ray start --address=...) and point RAY_ADDRESS at "
                "the cluster, or lower parallel.nnodes."
            )

    def _wait_for_worker_death(self) -> str:
        import ray

        done, _ = ray.wait(self.run_refs, num_returns=1)
        return self._describe_finished(done[0])

    def _dead_workers(self) -> list[str]:
        import ray

        done, _ = ray.wait(self.run_refs, num_returns=len(self.run_refs), timeout=0)
        return [self._describe_finished(ref) for ref in done]

    def _describe_finished(self, ref: Any) -> str:
        import ray

        rank = self.run_refs.index(ref)
        try:
            ray.get(ref)
        except Exception as exc:
            return f"Ray worker actor of rank {rank} died: {type(exc).__name__}: {exc}"
        return f"Ray worker actor of rank {rank} stopped"

    def _stop_workers(self) -> None:
        import ray

        for sock in self.controls:
            with contextlib.suppress(zmq.ZMQError):
                sock.send_multipart([SHUTDOWN, b""], flags=zmq.NOBLOCK)
        if self.run_refs:
            ray.wait(self.run_refs, num_returns=len(self.run_refs), timeout=SHUTDOWN_TIMEOUT_S)
        for actor in self.actors:
            ray.kill(actor)
        if self.placement_group is not None:
            ray.util.remove_placement_group(self.placement_group)
        self._close_sockets()


def _placement_group(ray: Any, world_size: int, on_gpu: bool) -> Any:
    from ray.util.placement_group import placement_group

    resource = "GPU" if on_gpu else "CPU"
    group = placement_group([{resource: 1}] * world_size, strategy="PACK")
    ready, _ = ray.wait([group.ready()], timeout=PLACEMENT_TIMEOUT_S)
    if not ready:
        ray.util.remove_placement_group(group)
        raise RuntimeError(
            f"the Ray cluster cannot place {world_size} workers of one {resource} each "
            f"within {PLACEMENT_TIMEOUT_S:.0f} s (cluster resources: {ray.cluster_resources()})"
        )
    return group
