"""How many Ray actors, with how many threads each, reserving which resources: decided once from
the cluster's resources (:func:`plan_actors` is pure, :func:`cluster_plan` asks the cluster)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional

from imgfeat_cli.common.errors import UsageError
from imgfeat_cli.common.system import default_batch_size, parse_device
from imgfeat_cli.pipeline.embedder import replica_threads

#: CPUs an actor reserves per inference thread. The rest of its share stays free for Ray's read and
#: write tasks, which otherwise wait for ever behind actors holding every CPU (ray#44687).
ACTOR_CPU_SHARE = 0.5


@dataclass(frozen=True)
class ActorPlan:
    """How many actors, with how many inference threads each, reserving which resources."""

    actors: int
    threads: int
    num_cpus: float
    num_gpus: float
    batch_size: int
    max_actors: int = 0  # > actors: the pool may grow to this many (an autoscaling cluster)

    def compute(self) -> Any:
        from ray.data import ActorPoolStrategy

        if self.max_actors > self.actors:
            return ActorPoolStrategy(min_size=self.actors, max_size=self.max_actors)
        return ActorPoolStrategy(size=self.actors)

    def describe(self) -> Dict[str, Any]:
        return {"actors": self.max_actors or self.actors, "threads": self.threads, "num_cpus": self.num_cpus,
                "num_gpus": self.num_gpus, "batch_size": self.batch_size}


def plan_actors(cluster_cpus: float, cluster_gpus: float, node_cpus: int, device: Optional[str] = None,
                actors: Optional[int] = None, threads: Optional[int] = None,
                batch_size: Optional[int] = None) -> ActorPlan:
    """Decide the actor pool from the cluster's resources. CPU: :func:`replica_threads` threads per
    actor (for the largest node), as many actors as the cluster's CPUs hold, each reserving
    :data:`ACTOR_CPU_SHARE` of a CPU per thread. GPU: one actor per GPU."""
    if actors is not None and actors < 1:
        raise UsageError(f"--actors must be >= 1, got {actors}")
    gpu = parse_device(device).is_gpu
    if gpu and cluster_gpus < 1:
        raise UsageError("--device gpu, but the Ray cluster has no GPUs", hint="use --device cpu, or add GPU nodes")
    per = threads or (2 if gpu else replica_threads(max(1, node_cpus)))
    need = per * ACTOR_CPU_SHARE
    if need > node_cpus:
        raise UsageError(f"{per} threads per actor need {need:g} CPUs, but the largest Ray node has {node_cpus}",
                         hint="pass fewer --threads")
    fit = int(cluster_gpus) if gpu else max(1, int(cluster_cpus // per))
    want = actors or fit
    return ActorPlan(min(want, fit), per, need, 1.0 if gpu else 0.0, batch_size or default_batch_size(device),
                     want if want > fit else 0)


def cluster_plan(device: Optional[str] = None, actors: Optional[int] = None, threads: Optional[int] = None,
                 batch_size: Optional[int] = None) -> ActorPlan:
    """:func:`plan_actors` for the connected cluster."""
    import ray

    res = ray.cluster_resources()
    node_cpus = max((int(n.get("Resources", {}).get("CPU", 0)) for n in ray.nodes() if n.get("Alive")), default=1)
    return plan_actors(res.get("CPU", 0.0), res.get("GPU", 0.0), node_cpus, device, actors, threads, batch_size)
