"""The KubeRay manifests in ``cluster/`` are valid and match the code they deploy (fast: no Ray, no cluster).

Schemas: the ``v1`` ``openAPIV3Schema`` of KubeRay's CRDs (``ray.io_rayservices.yaml``, ``ray.io_rayjobs.yaml``,
``ray.io_rayclusters.yaml``), read where they lie, never copied here: from the directory ``LLMROUTER_KUBERAY_CRDS``
names, else ``../shared/kuberay-crds`` beside the checkout (where CI has them). Without either the schema tests
skip, saying how to get them (``scripts/get_kuberay_crds.sh`` downloads a KubeRay release's). CRD schemas are
OpenAPI v3, not quite JSON Schema, and they let unknown fields through (the API server prunes them silently),
so :func:`strict_schema` rewrites them before validating:

- every object schema that lists ``properties`` (and neither ``additionalProperties`` nor
  ``x-kubernetes-preserve-unknown-fields``) gets ``additionalProperties: false``: a typo such as
  ``minReplica`` fails here instead of being dropped on apply;
- ``x-kubernetes-int-or-string`` becomes ``anyOf: [integer, string]``, ``nullable`` admits ``null``;
- ``x-kubernetes-list-type: map`` lists (env, ports, containers, volumes ...) must not repeat their
  ``x-kubernetes-list-map-keys``, as the API server enforces: :func:`duplicate_list_map_keys`.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import warnings
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from serve_app.config import AppConfig
from tests.placement import (
    Replica,
    deployments,
    groups_that_fit,
    node_groups,
    pack,
    replicas_at_max_scale,
    serve_validates,
)

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "cluster"
CRDS_ENV = "LLMROUTER_KUBERAY_CRDS"
SHARED_CRDS = ROOT.parent / "shared" / "kuberay-crds"   # CI: shared/ beside the clone
CRD_FILES = {"RayService": "ray.io_rayservices.yaml", "RayJob": "ray.io_rayjobs.yaml",
             "RayCluster": "ray.io_rayclusters.yaml"}
# libyaml's loader where PyYAML has it: the three CRDs are 3 MB of YAML
YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
TRAIN_JOBS = ("causal_lm", "policy", "automix", "hybrid", "oracle", "nmodel")
GPU_JOBS = ("causal_lm", "policy", "automix", "hybrid", "nmodel")
RAYJOB_FILES = [CLUSTER / f"rayjob-{job}.yaml" for job in TRAIN_JOBS]
RAYSERVICE_FILE = CLUSTER / "rayservice.yaml"
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


# --- schema handling -------------------------------------------------------------------------------
def strict_schema(node: Any) -> Any:
    """A JSON Schema copy of a CRD schema node that rejects unknown fields (see the module docstring)."""
    if isinstance(node, list):
        return [strict_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: strict_schema(value) for key, value in node.items()
           if not key.startswith("x-kubernetes-") and key != "properties"}
    if isinstance(node.get("properties"), dict):
        # field names, not keywords: kept as they are, each field's schema made strict
        out["properties"] = {name: strict_schema(sub) for name, sub in node["properties"].items()}
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    open_object = node.get("x-kubernetes-preserve-unknown-fields") or "additionalProperties" in node
    if "properties" in node and not open_object:
        out["additionalProperties"] = False
    return out


def crd_dir() -> Path:
    """Where KubeRay's CRDs are: ``$LLMROUTER_KUBERAY_CRDS`` (it must exist when set), else ../shared/kuberay-crds;
    the test skips when neither holds them."""
    configured = os.environ.get(CRDS_ENV)
    if configured:
        directory = Path(configured)
        missing = [name for name in CRD_FILES.values() if not (directory / name).is_file()]
        assert not missing, f"{CRDS_ENV}={configured} lacks {missing}: bash scripts/get_kuberay_crds.sh TAG DIR"
        return directory
    if all((SHARED_CRDS / name).is_file() for name in CRD_FILES.values()):
        return SHARED_CRDS
    pytest.skip(f"KubeRay's CRDs are not here: `bash scripts/get_kuberay_crds.sh` downloads a KubeRay release's "
                f"({', '.join(CRD_FILES.values())}); then set {CRDS_ENV} to their directory (or put them in "
                f"{SHARED_CRDS})")


@cache
def crd_schema(kind: str) -> dict[str, Any]:
    """The ``v1`` openAPIV3Schema of KubeRay's CRD for ``kind``."""
    crd = yaml.load((crd_dir() / CRD_FILES[kind]).read_text(), Loader=YAML_LOADER)
    assert crd["spec"]["names"]["kind"] == kind, f"{CRD_FILES[kind]} is not the {kind} CRD"
    versions = {v["name"]: v for v in crd["spec"]["versions"]}
    assert "v1" in versions, f"{CRD_FILES[kind]}: no v1 version (found {sorted(versions)})"
    return versions["v1"]["schema"]["openAPIV3Schema"]


@cache
def validator(kind: str) -> jsonschema.Draft7Validator:
    schema = strict_schema(crd_schema(kind))
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def duplicate_list_map_keys(value: Any, schema: dict[str, Any], path: str = "") -> list[str]:
    """Paths of items in ``x-kubernetes-list-type: map`` lists whose map keys repeat an earlier item's."""
    problems: list[str] = []
    if isinstance(value, dict):
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        for key, sub in value.items():
            sub_schema = props.get(key, extra if isinstance(extra, dict) else {})
            problems += duplicate_list_map_keys(sub, sub_schema, f"{path}.{key}")
    elif isinstance(value, list):
        items = schema.get("items", {})
        if schema.get("x-kubernetes-list-type") == "map":
            keys = schema.get("x-kubernetes-list-map-keys", [])
            defaults = {k: items.get("properties", {}).get(k, {}).get("default") for k in keys}
            seen: set[tuple[Any, ...]] = set()
            for i, item in enumerate(value):
                ident = tuple(item.get(k, defaults[k]) for k in keys)
                if ident in seen:
                    problems.append(f"{path}[{i}] repeats {dict(zip(keys, ident))}")
                seen.add(ident)
        for i, item in enumerate(value):
            problems += duplicate_list_map_keys(item, items, f"{path}[{i}]")
    return problems


def schema_errors(manifest: dict[str, Any]) -> list[str]:
    kind = manifest["kind"]
    errors = [f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
              for e in validator(kind).iter_errors(manifest)]
    return errors + duplicate_list_map_keys(manifest, crd_schema(kind))


# --- manifest access -------------------------------------------------------------------------------
def load(path: Path) -> dict[str, Any]:
    documents = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert len(documents) == 1, f"{path.name}: expected one document, found {len(documents)}"
    return documents[0]


def cluster_spec(manifest: dict[str, Any]) -> dict[str, Any]:
    return manifest["spec"]["rayClusterConfig" if manifest["kind"] == "RayService" else "rayClusterSpec"]


def ray_containers(manifest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Group name ("head" for the head) -> the Ray container (the first one, as KubeRay assumes)."""
    spec = cluster_spec(manifest)
    groups = {"head": spec["headGroupSpec"]}
    groups.update({g["groupName"]: g for g in spec.get("workerGroupSpecs", [])})
    return {name: g["template"]["spec"]["containers"][0] for name, g in groups.items()}


def gpus(container: dict[str, Any]) -> int:
    return int(container.get("resources", {}).get("limits", {}).get("nvidia.com/gpu", 0))


def serve_config() -> dict[str, Any]:
    return yaml.safe_load(load(RAYSERVICE_FILE)["spec"]["serveConfigV2"])


ALL_FILES = [RAYSERVICE_FILE, *RAYJOB_FILES]


# --- the schema machinery itself --------------------------------------------------------------------
def test_the_crd_schemas_are_kuberays_v1_schemas() -> None:
    for kind in ("RayService", "RayJob", "RayCluster"):
        schema = crd_schema(kind)
        assert schema["type"] == "object" and "spec" in schema["properties"], kind
    assert "serveConfigV2" in crd_schema("RayService")["properties"]["spec"]["properties"]
    assert "rayClusterSpec" in crd_schema("RayJob")["properties"]["spec"]["properties"]


def test_strict_validation_catches_typos_wrong_types_and_duplicates() -> None:
    good = load(RAYSERVICE_FILE)
    assert schema_errors(good) == []

    typo = json.loads(json.dumps(good))
    typo["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["minReplica"] = 1
    assert any("minReplica" in e for e in schema_errors(typo))

    deep_typo = json.loads(json.dumps(good))
    ray_containers(deep_typo)["head"]["readinesProbe"] = {}
    assert any("readinesProbe" in e for e in schema_errors(deep_typo))

    wrong_type = json.loads(json.dumps(good))
    wrong_type["spec"]["rayClusterConfig"]["headGroupSpec"]["rayStartParams"]["num-cpus"] = 0
    assert any("num-cpus" in e for e in schema_errors(wrong_type))

    quantity = json.loads(json.dumps(good))
    limits = ray_containers(quantity)["head"]["resources"]
    limits["limits"]["cpu"] = 4               # int-or-string: an integer quantity is fine ...
    assert schema_errors(quantity) == []
    limits["limits"]["cpu"] = ["4"]           # ... a list is not
    assert any("cpu" in e for e in schema_errors(quantity))

    duplicate = json.loads(json.dumps(good))
    ports = ray_containers(duplicate)["head"]["ports"]
    ports.append({"name": "again", "containerPort": ports[0]["containerPort"]})
    assert any("repeats" in e for e in schema_errors(duplicate))


# --- every manifest --------------------------------------------------------------------------------
@pytest.mark.parametrize("path", ALL_FILES, ids=lambda p: p.name)
def test_manifest_validates_against_the_kuberay_schema(path: Path) -> None:
    manifest = load(path)
    assert manifest["apiVersion"] == "ray.io/v1"
    assert manifest["kind"] == ("RayService" if path == RAYSERVICE_FILE else "RayJob")
    errors = schema_errors(manifest)
    assert not errors, f"{path.name}:\n" + "\n".join(errors)
    # the RayCluster part is the RayCluster CRD's spec: check it against that schema too
    cluster = {"apiVersion": "ray.io/v1", "kind": "RayCluster", "metadata": {"name": "x"},
               "spec": cluster_spec(manifest)}
    errors = schema_errors(cluster)
    assert not errors, f"{path.name} cluster spec:\n" + "\n".join(errors)


@pytest.mark.parametrize("path", ALL_FILES, ids=lambda p: p.name)
def test_cluster_shape_ports_probes_and_resources(path: Path) -> None:
    manifest = load(path)
    name = manifest["metadata"]["name"]
    # KubeRay derives service and pod names from it ("<name>-serve-svc", "<name>-head-svc")
    assert DNS_LABEL.match(name) and len(name) <= 40, name
    spec = cluster_spec(manifest)
    assert spec["enableInTreeAutoscaling"] is True and spec["autoscalerOptions"]["resources"]["limits"]
    head = spec["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0", "no replicas or training actors on the head"
    assert head["rayStartParams"]["dashboard-host"] == "0.0.0.0", "ray job submit / RayJob need the dashboard"
    for group in spec["workerGroupSpecs"]:
        assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"], group["groupName"]

    containers = ray_containers(manifest)
    head_ports = {p["name"]: p["containerPort"] for p in containers["head"]["ports"]}
    expected_ports = {"gcs-server": 6379, "dashboard": 8265, "client": 10001, "metrics": 8080}
    assert expected_ports.items() <= head_ports.items()
    for group, container in containers.items():
        assert gpus(container) == 0 or group != "head", "the head has no GPU"
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports.get("metrics") == 8080, group
        assert container["workingDir"] == "/home/ray/ray-llm-router", group
        resources = container["resources"]
        assert resources["requests"] and resources["limits"], group
        for key in ("cpu", "memory"):
            assert key in resources["limits"], (group, key)
        for probe in ("readinessProbe", "livenessProbe"):
            command = " ".join(container[probe]["exec"]["command"])
            assert "local_raylet_healthz" in command, (group, probe)
        if group == "head":
            assert "gcs_healthz" in " ".join(container["livenessProbe"]["exec"]["command"])
        env = {e["name"]: e for e in container["env"]}
        assert env["HF_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "hf-token", group
        assert "value" not in env["HF_TOKEN"], "the token comes from a secret, never the manifest"
        assert env["LLMROUTER_HOME"]["value"] == container["workingDir"]


RAY_TOKEN_SECRET = "llmrouter-ray-token"


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


@pytest.mark.parametrize("path", ALL_FILES, ids=lambda p: p.name)
def test_ray_token_auth_is_on_with_the_token_from_a_secret(path: Path) -> None:
    """The head exposes the dashboard and job API on the pod network (dashboard-host 0.0.0.0), and the job
    API runs arbitrary code by design (CVE-2023-48022, "ShadowRay"): it is only acceptable behind a token."""
    manifest = load(path)
    assert cluster_spec(manifest)["authOptions"] == {"mode": "token", "secretName": RAY_TOKEN_SECRET}
    text = path.read_text()
    assert "RAY_AUTH_MODE, value: disabled" not in text and "enableK8sTokenAuth" not in text
    for group, container in ray_containers(manifest).items():
        env = env_of(container)
        # KubeRay injects both from authOptions; a literal value would put the token in the manifest
        assert "RAY_AUTH_TOKEN" not in env and env.get("RAY_AUTH_MODE", {}).get("value", "token") == "token", group


@pytest.mark.parametrize("path", RAYJOB_FILES, ids=lambda p: p.name)
def test_rayjob_submitter_sends_the_token_from_the_same_secret(path: Path) -> None:
    submitter = load(path)["spec"]["submitterPodTemplate"]["spec"]["containers"][0]
    env = env_of(submitter)
    assert env["RAY_AUTH_MODE"]["value"] == "token"
    assert env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": RAY_TOKEN_SECRET, "key": "auth_token"}
    assert "value" not in env["RAY_AUTH_TOKEN"]


def test_cluster_readme_creates_the_token_secret_and_reaches_the_job_api_with_it() -> None:
    readme = (CLUSTER / "README.md").read_text()
    assert f"kubectl create secret generic {RAY_TOKEN_SECRET} --from-literal=auth_token=" in readme
    assert "kubectl port-forward svc/" in readme and "RAY_AUTH_MODE=token" in readme
    assert f"kubectl get secret {RAY_TOKEN_SECRET} -o jsonpath='{{.data.auth_token}}' | base64 -d" in readme


# --- the Hugging Face token: required wherever a workload downloads hub models --------------------------------
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
LOCAL_PREFIXES = ("models/", "artifacts/", "runs/", "/")


def hub_models(node: Any) -> set[str]:
    """The hub ids a config names as a ``model`` or ``base_model`` (not local directories)."""
    found: set[str] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("model", "base_model") and isinstance(value, str) and HUB_ID.match(value) \
                    and not value.startswith(LOCAL_PREFIXES) and not (ROOT / value).exists():
                found.add(value)
            else:
                found |= hub_models(value)
    elif isinstance(node, list):
        for item in node:
            found |= hub_models(item)
    return found


def workload_hub_models(path: Path) -> set[str]:
    """Hub models a manifest's workload downloads: the serve config's, or the job config's and its router
    config's."""
    manifest = load(path)
    if manifest["kind"] == "RayService":
        return hub_models(serve_config())
    argv = shlex.split(manifest["spec"]["entrypoint"])
    job_config = yaml.safe_load((ROOT / argv[argv.index("--config") + 1]).read_text())
    found = hub_models(job_config)
    if job_config.get("router_config"):
        found |= hub_models(yaml.safe_load((ROOT / job_config["router_config"]).read_text()))
    return found


@pytest.mark.parametrize("path", ALL_FILES, ids=lambda p: p.name)
def test_the_hf_token_secret_is_required_where_hub_models_are_downloaded(path: Path) -> None:
    """Without the secret such pods must fail to start (CreateContainerConfigError: secret "hf-token" not found),
    not start and 401 later inside a replica or a training worker."""
    hub = workload_hub_models(path)
    for group, container in ray_containers(load(path)).items():
        reference = env_of(container)["HF_TOKEN"]["valueFrom"]["secretKeyRef"]
        assert reference["name"] == "hf-token", (path.name, group)
        if hub:   # local models only: optional, so a job that needs none starts without the secret
            assert not reference.get("optional", False), f"{path.name} {group}: downloads {sorted(hub)}"


def test_every_rayservice_container_reads_remote_model_keys_from_the_secret() -> None:
    """Keys of endpoint models (``api_key_env``) reach the ingress from Secret llmrouter-upstream-keys, optional:
    a layout with no remote model starts without it."""
    for group, container in ray_containers(load(RAYSERVICE_FILE)).items():
        sources = [source["secretRef"] for source in container.get("envFrom") or [] if "secretRef" in source]
        assert {"name": "llmrouter-upstream-keys", "optional": True} in sources, group
    readme = (CLUSTER / "README.md").read_text()
    assert "kubectl create secret generic llmrouter-upstream-keys" in readme


def test_the_rayservice_and_the_gpu_jobs_download_gated_hub_models() -> None:
    """The check above has something to check: the production layout's models come from the hub."""
    assert {"meta-llama/Llama-3.1-8B-Instruct", "meta-llama/Llama-3.1-70B-Instruct"} <= workload_hub_models(
        RAYSERVICE_FILE)
    assert "google/gemma-2b" in workload_hub_models(CLUSTER / "rayjob-policy.yaml")
    assert workload_hub_models(CLUSTER / "rayjob-oracle.yaml") == set()


# --- the image: one value, in cluster/kustomization.yaml --------------------------------------------------------
KUSTOMIZATION = CLUSTER / "kustomization.yaml"
PLACEHOLDER_REPOSITORY = "ghcr.io/your-org/ray-llm-router"


def container_images(node: Any) -> list[str]:
    """Every container image in a manifest (Ray containers, the RayJob submitter, init containers)."""
    images: list[str] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("containers", "initContainers") and isinstance(value, list):
                images += [c["image"] for c in value if "image" in c]
            images += container_images(value)
    elif isinstance(node, list):
        for item in node:
            images += container_images(item)
    return images


def image_entry() -> dict[str, str]:
    kustomization = yaml.safe_load(KUSTOMIZATION.read_text())
    assert sorted(kustomization["resources"]) == sorted(p.name for p in ALL_FILES), "every manifest, once"
    (entry,) = kustomization["images"]
    return entry


def kustomize_rendered_images() -> list[str] | None:
    """The images `kubectl kustomize cluster/` renders; None where kubectl is not installed."""
    if shutil.which("kubectl") is None:
        return None
    rendered = subprocess.run(["kubectl", "kustomize", str(CLUSTER)], capture_output=True, text=True, check=True)
    return [image for document in yaml.safe_load_all(rendered.stdout) for image in container_images(document)]


def test_one_kustomize_entry_sets_the_image_of_every_container() -> None:
    """The image is one value to set: cluster/kustomization.yaml's `images` entry rewrites every container of
    every manifest (kustomize matches the image name); the test warns while that value is the placeholder."""
    entry = image_entry()
    target = f"{entry['newName']}:{entry['newTag']}"
    per_file = {path.name: container_images(load(path)) for path in ALL_FILES}
    for name, images in per_file.items():
        assert images and {image.split(":")[0] for image in images} == {entry["name"]}, (name, images)
    rendered = kustomize_rendered_images()
    if rendered is not None:
        assert rendered and set(rendered) == {target}, f"kubectl kustomize renders {set(rendered)}"
    if entry["newName"] == PLACEHOLDER_REPOSITORY:
        message = (f"cluster/kustomization.yaml still sets the placeholder image {target} for "
                   f"{', '.join(per_file)}: set images[0].newName/newTag to your registry's image (cluster/README.md)")
        assert os.environ.get("LLMROUTER_REQUIRE_IMAGE") != "1", message
        warnings.warn(message, UserWarning, stacklevel=1)


# --- RayService ------------------------------------------------------------------------------------
def test_serve_config_is_the_gpu_layout_verbatim() -> None:
    assert serve_config() == yaml.safe_load((ROOT / "configs" / "serve_gpu.yaml").read_text())


def test_serve_application_args_validate_and_import_path_resolves() -> None:
    applications = serve_config()["applications"]
    assert applications
    for app in applications:
        AppConfig.model_validate(app["args"])   # .resolved() needs hub downloads and GPU artifacts
        module_name, function = app["import_path"].split(":")
        assert callable(getattr(importlib.import_module(module_name), function))


def test_rayservice_serves_on_8000_with_proxy_readiness_on_workers() -> None:
    manifest = load(RAYSERVICE_FILE)
    port = serve_config()["http_options"]["port"]
    containers = ray_containers(manifest)
    assert {p["name"]: p["containerPort"] for p in containers["head"]["ports"]}["serve"] == port
    for group, container in containers.items():
        if group == "head":
            # the operator checks the head's proxy itself; a proxy probe would hold the head unready
            assert "-/healthz" not in " ".join(container["readinessProbe"]["exec"]["command"])
            continue
        assert {p["name"]: p["containerPort"] for p in container["ports"]}["serve"] == port
        readiness = " ".join(container["readinessProbe"]["exec"]["command"])
        assert f"localhost:{port}/-/healthz" in readiness, group


# --- placement: every replica fits the node groups, GPU deployments only their own ------------------------------
# The GPU size each GPU group's node affinity asks for (MiB per GPU, NVIDIA GPU feature discovery's label):
# 48 GB class cards report ~46000, 80 GB ones ~81500 (cluster/README.md, "Node layout and scaling").
GPU_MEMORY_FLOOR_MIB = {"gpu-x2": 45000, "gpu-x4": 79000}
GPU_MEMORY_LABEL = "nvidia.com/gpu.memory"


def rayservice_groups() -> list[Any]:
    return node_groups(cluster_spec(load(RAYSERVICE_FILE)))


def serve_args() -> dict[str, Any]:
    return serve_config()["applications"][0]["args"]


def unpinned_gpu_replicas(replicas: list[Replica], groups: list[Any]) -> dict[str, list[str]]:
    """GPU replicas that more than one group could take (they may land on the large model's GPUs)."""
    return {r.deployment: fit for r in replicas if r.gpus > 0 and len(fit := groups_that_fit(r, groups)) != 1}


def test_every_replica_fits_the_rayservice_node_groups_at_max_scale() -> None:
    """Every deployment's bundles (GPUs, custom resources, accelerator types, CPUs) at its max_replicas fit
    the worker groups at their maxReplicas, as Ray's autoscaler reads the groups; a fractional GPU on one GPU."""
    groups = rayservice_groups()
    replicas = replicas_at_max_scale(serve_args())
    for replica in replicas:
        assert groups_that_fit(replica, groups), f"{replica.deployment}: {replica.bundles} fits no node group"
    assert pack(replicas, groups) == []
    for settings, llm_server in deployments(serve_args()).values():
        if not llm_server:   # Ray Serve LLM adds its replica to the first bundle instead of placing it inside
            serve_validates(settings)


def test_gpu_deployments_are_pinned_to_one_node_group() -> None:
    """Each GPU deployment fits exactly one group (its custom resource), so the small model, embedder and
    routers never take the gpu-x4 GPUs the large model's STRICT_PACK group needs."""
    groups = rayservice_groups()
    replicas = replicas_at_max_scale(serve_args())
    assert unpinned_gpu_replicas(replicas, groups) == {}
    large = next(r for r in replicas if r.deployment == f"model {serve_args()['large_model']}")
    assert groups_that_fit(large, groups) == ["gpu-x4"]


@pytest.mark.slow
def test_ray_serve_llm_reserves_the_bundles_the_placement_check_assumes() -> None:
    """The placement check's model of an answer model's replica is what Ray Serve LLM builds: the layout's
    bundles with the replica's own resources added to the first (building the deployment starts local Ray)."""
    import ray

    from serve_app.deployments.llm_server import build_llm_server
    from tests.placement import replica_of

    started_here = not ray.is_initialized()
    try:
        config = AppConfig.model_validate(serve_args())
        for key, spec in config.models.items():
            built = build_llm_server(key, spec)._bound_deployment._replica_config
            expected = replica_of(key, spec.deployment, replica_in_first_bundle=True).bundles
            assert [{k: float(v) for k, v in b.items()} for b in built.placement_group_bundles] == list(expected), key
            assert built.placement_group_strategy == (spec.deployment.placement_group_strategy or "PACK")
    finally:
        if started_here and ray.is_initialized():
            ray.shutdown()


def test_serve_refuses_a_replica_bigger_than_its_first_bundle() -> None:
    """The check above is Ray Serve's own validation: it does refuse a replica outside its first bundle."""
    causal = deployments(serve_args())["router causal"][0]
    oversized = causal.model_copy(update={"ray_actor_options": {"num_cpus": 2, "num_gpus": 0}})
    with pytest.raises(ValueError, match="first bundle"):
        serve_validates(oversized)


def test_the_pinning_check_catches_unpinned_gpu_deployments() -> None:
    """The layout as it shipped (GPU bundles with no custom resource) fails the pinning check."""
    args = json.loads(json.dumps(serve_args()))
    for spec in [*args["models"].values(), args["embedder"], args["routers"]["causal"], args["routers"]["policy"]]:
        deployment = spec["deployment"]
        deployment["ray_actor_options"].pop("resources", None)
        for bundle in deployment.get("placement_group_bundles") or []:
            for key in [k for k in bundle if k.startswith("llmrouter_")]:
                del bundle[key]
    unpinned = unpinned_gpu_replicas(replicas_at_max_scale(args), rayservice_groups())
    assert {"model small", "embedder", "router policy", "router causal"} <= set(unpinned)


def test_gpu_groups_require_the_gpu_size_they_are_sized_for() -> None:
    for group in cluster_spec(load(RAYSERVICE_FILE))["workerGroupSpecs"]:
        if gpus(group["template"]["spec"]["containers"][0]) == 0:
            continue
        terms = group["template"]["spec"]["affinity"]["nodeAffinity"][
            "requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
        floors = [int(e["values"][0]) for term in terms for e in term["matchExpressions"]
                  if e["key"] == GPU_MEMORY_LABEL and e["operator"] == "Gt"]
        assert floors and min(floors) >= GPU_MEMORY_FLOOR_MIB[group["groupName"]], group["groupName"]


@pytest.mark.parametrize("job", TRAIN_JOBS)
def test_rayjob_workers_fit_the_job_node_groups(job: str) -> None:
    """The job's Ray workers (num_workers x its CPU/GPU per worker) fit its worker groups at their maxima."""
    manifest = load(CLUSTER / f"rayjob-{job}.yaml")
    argv = shlex.split(manifest["spec"]["entrypoint"])
    settings = job_config_of(job, argv[argv.index("--config") + 1]).ray
    worker = Replica(f"{job} worker", ({k: float(v) for k, v in settings.worker_resources().items()},))
    groups = node_groups(cluster_spec(manifest))
    assert groups_that_fit(worker, groups), f"{job}: a worker {worker.bundles} fits no group"
    assert pack([worker] * settings.num_workers, groups) == [], f"{job}: {settings.num_workers} workers do not fit"


# --- artifacts: shipped in the image, or written to runs/ by a RayJob ----------------------------------
def job_config_of(job: str, config: str) -> Any:
    """The job's own pydantic config model validates the file (as ``python -m train_jobs.<job>`` would)."""
    from train_jobs.common import JobConfig, load_job_config

    module = importlib.import_module(f"train_jobs.{job}")
    models = [v for v in vars(module).values()
              if isinstance(v, type) and issubclass(v, JobConfig) and v is not JobConfig]
    assert len(models) == 1, f"train_jobs.{job}: expected one JobConfig subclass, found {models}"
    return load_job_config(ROOT / config, models[0])


def artifacts_written_by_rayjobs() -> set[str]:
    """The router artifacts the RayJobs' training configs save (their router configs' save paths)."""
    from routers.config import load_config_file

    written = set()
    for job in TRAIN_JOBS:
        argv = shlex.split(load(CLUSTER / f"rayjob-{job}.yaml")["spec"]["entrypoint"])
        router_config = getattr(job_config_of(job, argv[argv.index("--config") + 1]), "router_config", None)
        if router_config is not None:
            save = load_config_file(ROOT / router_config).model_path.save_model_path
            if save:
                written.add(str(save))
    return written


def test_every_artifact_the_rayservice_serves_exists_or_a_rayjob_writes_it() -> None:
    args = AppConfig.model_validate(serve_config()["applications"][0]["args"])
    produced = artifacts_written_by_rayjobs()
    for kind in ("hybrid", "automix", "causal", "policy"):
        spec = getattr(args.routers, kind)
        if spec is None:
            continue
        for path in filter(None, [spec.artifact, getattr(spec, "policy_map", None)]):
            if path.startswith("runs/"):
                assert path in produced, f"routers.{kind}: {path} is on runs/ but no RayJob writes it ({produced})"
            else:
                assert (ROOT / path).exists(), f"routers.{kind}: {path} is not in the repository (the image)"


def test_the_gpu_hybrid_artifact_is_trained_with_the_served_embedder() -> None:
    """The RayJob's router config embeds with exactly the embedder the RayService serves."""
    from routers.config import load_config_file

    args = AppConfig.model_validate(serve_config()["applications"][0]["args"])
    assert args.embedder is not None and args.routers.hybrid is not None
    argv = shlex.split(load(CLUSTER / "rayjob-hybrid.yaml")["spec"]["entrypoint"])
    router_config = load_config_file(ROOT / job_config_of("hybrid", argv[argv.index("--config") + 1]).router_config)
    assert str(router_config.model_path.save_model_path) == args.routers.hybrid.artifact
    assert router_config.engines.embedder is not None
    trained = router_config.engines.embedder.model_dump()
    served = args.embedder.engine.model_dump()
    for key in ("model", "pooling", "normalize", "max_length", "global_attention_first_token"):
        assert trained[key] == served[key], key


# --- RayJobs ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("job", TRAIN_JOBS)
def test_rayjob_entrypoint_module_and_config_exist(job: str) -> None:
    manifest = load(CLUSTER / f"rayjob-{job}.yaml")
    argv = shlex.split(manifest["spec"]["entrypoint"])
    assert argv[:3] == ["python", "-m", f"train_jobs.{job}"], argv
    assert importlib.util.find_spec(argv[2]) is not None, f"module {argv[2]} does not exist"
    config = argv[argv.index("--config") + 1]
    assert config in (f"configs/train/{job}.yaml", f"configs/train/{job}_gpu.yaml"), config
    assert (ROOT / config).is_file(), f"{config} does not exist in the repository"
    job_config = job_config_of(job, config)
    router_config = getattr(job_config, "router_config", None)
    if router_config is not None:
        assert (ROOT / router_config).is_file(), f"{config}: router_config {router_config} does not exist"


@pytest.mark.parametrize("job", TRAIN_JOBS)
def test_rayjob_lifecycle_and_sizing(job: str) -> None:
    manifest = load(CLUSTER / f"rayjob-{job}.yaml")
    spec = manifest["spec"]
    assert spec["shutdownAfterJobFinishes"] is True
    assert spec["ttlSecondsAfterFinished"] > 0
    containers = ray_containers(manifest)
    has_gpu = any(gpus(c) > 0 for c in containers.values())
    expected = job in GPU_JOBS
    assert has_gpu == expected, f"{job}: GPU workers {'missing' if expected else 'not needed'}"
    assert any(gpus(c) == 0 for name, c in containers.items() if name != "head"), "a CPU group for CPU work"
    for group in spec["rayClusterSpec"]["workerGroupSpecs"]:
        mounts = {m["mountPath"] for m in group["template"]["spec"]["containers"][0].get("volumeMounts", [])}
        assert "/home/ray/ray-llm-router/runs" in mounts, "Ray Train needs storage every node sees"


def test_the_alert_rules_query_metrics_the_router_exports_with_their_labels() -> None:
    """Every ``ray_<name>_total`` in cluster/prometheus-rules.yaml is a counter RouterMetrics defines (Ray
    exports counter ``<name>`` as ``ray_<name>_total``), and every label it selects or groups by is one of
    that counter's tag keys: a renamed metric must not leave an alert that can never fire."""
    from serve_app.observability import RouterMetrics

    counters: dict[str, tuple[str, ...]] = {}

    def counter(name: str, description: str, tag_keys: tuple[str, ...] = ()) -> Any:
        counters[name] = tag_keys
        return None

    RouterMetrics(counter=counter, histogram=lambda *a, **k: None)
    rules = yaml.safe_load((CLUSTER / "prometheus-rules.yaml").read_text())
    assert rules["kind"] == "PrometheusRule" and rules["apiVersion"] == "monitoring.coreos.com/v1"
    exprs = [rule["expr"] for group in rules["spec"]["groups"] for rule in group["rules"]]
    alerts = [rule["alert"] for group in rules["spec"]["groups"] for rule in group["rules"] if "alert" in rule]
    assert {"LLMRouterKeyLargeShareJump", "LLMRouterKeyBudgetRefusals", "LLMRouterAnswerModelCooldown"} <= set(alerts)
    used = 0
    for expr in exprs:
        for name, selector in re.findall(r"ray_(llmrouter_\w+?)_total(\{[^}]*\})?", expr):
            assert name in counters, f"{name} is not a metric of serve_app/observability.py"
            labels = set(re.findall(r"(\w+)=", selector)) | set(re.findall(r"by \((\w+)\)", expr))
            assert labels <= set(counters[name]), (name, labels, counters[name])
            used += 1
    assert used >= 5
