"""Does every replica of a Serve layout (or worker of a training job) fit the node groups a KubeRay manifest
declares? A small model of Ray's scheduling, for tests/test_cluster.py.

Node resources come from Ray's own autoscaler (how it reads a KubeRay group spec: CPU, GPU and memory from
the container limits or rayStartParams, custom resources from the group's ``resources``). A replica is the
bundles it reserves: its placement-group bundles or its actor options alone, all on one node (STRICT_PACK's
rule; PACK's preference, taken as a rule here, which is stricter).
Ray Serve LLM adds an answer model's replica resources to its first bundle. A fractional GPU must fit on one
GPU of a node; a whole GPU takes whole GPUs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ray import serve
from ray.autoscaler._private.kuberay.autoscaling_config import _get_ray_resources_from_group_spec

from serve_app.config import AppConfig, DeploymentSettings

Bundle = dict[str, float]
EPSILON = 1e-9


@dataclass(frozen=True)
class NodeGroup:
    name: str
    resources: dict[str, float]
    max_nodes: int


@dataclass(frozen=True)
class Replica:
    """One replica of a deployment: the bundles it reserves on one node."""

    deployment: str
    bundles: tuple[Bundle, ...]

    @property
    def gpus(self) -> float:
        return sum(b.get("GPU", 0.0) for b in self.bundles)


@dataclass
class Node:
    """A node's free resources while replicas are packed onto it (GPUs one by one, for fractions)."""

    group: NodeGroup
    free: dict[str, float] = field(default_factory=dict)
    gpus: list[float] = field(default_factory=list)

    @classmethod
    def empty(cls, group: NodeGroup) -> Node:
        free = {k: v for k, v in group.resources.items() if k != "GPU"}
        return cls(group, free, [1.0] * int(group.resources.get("GPU", 0)))

    def take(self, bundle: Bundle) -> bool:
        """Reserve ``bundle`` here if it fits (True), leaving the node unchanged otherwise."""
        free, gpus = dict(self.free), list(self.gpus)
        for key, amount in bundle.items():
            if key == "GPU":
                continue
            if free.get(key, 0.0) + EPSILON < amount:
                return False
            free[key] = free.get(key, 0.0) - amount
        if not take_gpus(gpus, bundle.get("GPU", 0.0)):
            return False
        self.free, self.gpus = free, gpus
        return True


def take_gpus(gpus: list[float], amount: float) -> bool:
    """Take ``amount`` GPUs from the per-GPU free fractions ``gpus`` (in place): whole GPUs for amounts of
    one or more, one GPU's remainder for a fraction (Ray never splits a fraction over two GPUs)."""
    if amount <= 0:
        return True
    if amount < 1:
        for i, left in enumerate(gpus):
            if left + EPSILON >= amount:
                gpus[i] = left - amount
                return True
        return False
    whole = [i for i, left in enumerate(gpus) if left >= 1 - EPSILON]
    if len(whole) < amount:
        return False
    for i in whole[: int(amount)]:
        gpus[i] = 0.0
    return True


def node_groups(cluster_spec: dict[str, Any]) -> list[NodeGroup]:
    """The worker groups (the head runs no replicas: num-cpus 0) as Ray's autoscaler sees them."""
    return [NodeGroup(g["groupName"], {k: float(v) for k, v in _get_ray_resources_from_group_spec(g, False).items()},
                      int(g["maxReplicas"]))
            for g in cluster_spec["workerGroupSpecs"]]


def actor_bundle(options: dict[str, Any], default_cpus: float = 1.0) -> Bundle:
    """What a Ray actor with these ``ray_actor_options`` reserves."""
    bundle: Bundle = {"CPU": float(options.get("num_cpus", default_cpus))}
    if options.get("num_gpus"):
        bundle["GPU"] = float(options["num_gpus"])
    if options.get("memory"):
        bundle["memory"] = float(options["memory"])
    if options.get("accelerator_type"):
        bundle[f"accelerator_type:{options['accelerator_type']}"] = 0.001   # Ray's label resource
    bundle.update({k: float(v) for k, v in (options.get("resources") or {}).items()})
    return {k: v for k, v in bundle.items() if v}


def merge(first: Bundle, extra: Bundle) -> Bundle:
    return {k: first.get(k, 0.0) + extra.get(k, 0.0) for k in set(first) | set(extra)}


def replica_of(name: str, settings: DeploymentSettings, replica_in_first_bundle: bool) -> Replica:
    """``replica_in_first_bundle``: Ray Serve LLM adds the replica actor's resources to the first bundle; a
    Serve deployment's replica instead runs inside its first bundle (``replica_within_first_bundle``)."""
    actor = actor_bundle(settings.ray_actor_options)
    if not settings.placement_group_bundles:
        return Replica(name, (actor,))
    bundles = [dict(b) for b in settings.placement_group_bundles]
    if replica_in_first_bundle:
        bundles[0] = merge(bundles[0], actor)
    return Replica(name, tuple(bundles))


@serve.deployment
class _Probe:
    """A deployment to hang options on: Ray Serve validates them when they are set."""


def serve_validates(settings: DeploymentSettings) -> None:
    """Ray Serve's own checks of a deployment's options (raises ValueError): among them, that a replica with
    placement-group bundles fits inside its first bundle, where Serve schedules it."""
    _Probe.options(**settings.serve_options())


def max_replicas(settings: DeploymentSettings) -> int:
    if settings.autoscaling_config:
        return int(settings.autoscaling_config["max_replicas"])
    return settings.num_replicas if isinstance(settings.num_replicas, int) else 1


def deployments(args: dict[str, Any]) -> dict[str, tuple[DeploymentSettings, bool]]:
    """Every deployment of a serve config: name -> (settings, whether it is a Ray Serve LLM server)."""
    config = AppConfig.model_validate(args)
    out = {f"model {k}": (s.deployment, s.engine.backend == "vllm") for k, s in config.models.items()}
    if config.embedder is not None and config.embedder.placement == "deployment":
        out["embedder"] = (config.embedder.deployment, False)
    for kind in ("causal", "policy", "bert"):
        spec = getattr(config.routers, kind)
        if spec is not None:
            out[f"router {kind}"] = (spec.deployment, False)
    out["ingress"] = (config.ingress.deployment, False)
    return out


def replicas_at_max_scale(args: dict[str, Any]) -> list[Replica]:
    replicas = []
    for name, (settings, llm_server) in deployments(args).items():
        replicas += [replica_of(name, settings, llm_server)] * max_replicas(settings)
    return replicas


def fits_on_empty_node(replica: Replica, group: NodeGroup) -> bool:
    """Whether one replica can be placed on a node of ``group`` at all."""
    node = Node.empty(group)
    return all(node.take(b) for b in replica.bundles)


def groups_that_fit(replica: Replica, groups: list[NodeGroup]) -> list[str]:
    return [g.name for g in groups if fits_on_empty_node(replica, g)]


def pack(replicas: list[Replica], groups: list[NodeGroup]) -> list[str]:
    """First-fit decreasing (largest GPU demand first) of every replica onto at most ``max_nodes`` nodes of
    each group; the replicas that found no room (empty: they all fit)."""
    nodes: dict[str, list[Node]] = {g.name: [] for g in groups}
    unplaced = []
    for replica in sorted(replicas, key=lambda r: (-r.gpus, -len(r.bundles), r.deployment)):
        if not any(place(replica, group, nodes[group.name]) for group in groups):
            unplaced.append(replica.deployment)
    return unplaced


def place(replica: Replica, group: NodeGroup, nodes: list[Node]) -> bool:
    """Place ``replica`` on an existing node of ``group`` or a new one (within its maximum)."""
    candidates = [*nodes, Node.empty(group)] if len(nodes) < group.max_nodes else list(nodes)
    for node in candidates:
        trial = Node(node.group, dict(node.free), list(node.gpus))
        if all(trial.take(b) for b in replica.bundles):
            node.free, node.gpus = trial.free, trial.gpus
            if node not in nodes:
                nodes.append(node)
            return True
    return False
