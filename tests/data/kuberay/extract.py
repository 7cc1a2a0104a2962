"""Extract the ``v1`` openAPIV3Schema of KubeRay's CRDs into the gzipped JSON files next to this script.

CI has no copy of the CRDs, so ``tests/test_cluster.py`` validates the manifests in ``cluster/`` against
these vendored schemas. They are the CRDs' schemas unchanged (keys sorted); the test itself makes them
strict about unknown fields. Re-run after updating KubeRay::

    python tests/data/kuberay/extract.py /path/to/kuberay/ray-operator/config/crd/bases
"""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
KINDS = {
    "rayservice": "ray.io_rayservices.yaml",
    "rayjob": "ray.io_rayjobs.yaml",
    "raycluster": "ray.io_rayclusters.yaml",
}
VERSION = "v1"


def v1_schema(crd_file: Path) -> dict:
    crd = yaml.safe_load(crd_file.read_text())
    for version in crd["spec"]["versions"]:
        if version["name"] == VERSION:
            return version["schema"]["openAPIV3Schema"]
    raise SystemExit(f"{crd_file}: no {VERSION} version")


def main(crd_dir: str) -> None:
    for kind, filename in KINDS.items():
        schema = v1_schema(Path(crd_dir) / filename)
        target = HERE / f"{kind}.schema.json.gz"
        payload = json.dumps(schema, sort_keys=True, separators=(",", ":")).encode()
        # mtime=0: re-extracting the same CRD gives byte-identical files (no spurious diffs)
        target.write_bytes(gzip.compress(payload, compresslevel=9, mtime=0))
        print(f"{target.name}: {len(payload)} bytes of JSON, {target.stat().st_size} gzipped")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "/work/shared/kuberay-crds")
