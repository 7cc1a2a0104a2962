#!/usr/bin/env bash
# KubeRay's CRDs (RayCluster, RayJob, RayService) from a KubeRay release, for tests/test_cluster.py, which
# validates cluster/*.yaml against them. They are KubeRay's files: read where they lie, never committed here.
#   bash scripts/get_kuberay_crds.sh [TAG] [DIR]    # default: v1.5.1 into ~/.cache/llmrouter/kuberay-crds
#   export LLMROUTER_KUBERAY_CRDS=DIR               # (or put them in ../shared/kuberay-crds beside the checkout)
set -euo pipefail
tag="${1:-v1.5.1}"
dir="${2:-${LLMROUTER_KUBERAY_CRDS:-$HOME/.cache/llmrouter/kuberay-crds}}"
mkdir -p "$dir" && for kind in rayclusters rayjobs rayservices; do curl -fsSL -o "$dir/ray.io_$kind.yaml" "https://raw.githubusercontent.com/ray-project/kuberay/$tag/ray-operator/config/crd/bases/ray.io_$kind.yaml"; done
echo "KubeRay $tag CRDs in $dir; run the tests with: export LLMROUTER_KUBERAY_CRDS=$dir"
