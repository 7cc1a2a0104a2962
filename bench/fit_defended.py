"""Fit embedding routers with a gadget defence on, calibrated on defended training scores.

    python bench/fit_defended.py --routers hybrid_llm,blend --threads 2

For each router: ``configs/routers/<name>.yaml`` with ``hparam.defence`` set (``--defence``, default
``bench/gadget_attack.py``'s ``window_max``) and ``save_model_path`` moved to ``--out/<name>`` (the config
written next to it), fitted as ``llmrouter train`` fits it (``threshold_rule`` as configured, so
``oracle_share`` calibrates on the defended scores of the training queries), saved there. With
``--control`` the same config without the defence is fitted too (not saved), to check it reproduces the
shipped artifact's threshold. The embedder is the config's, behind a ``CachedEmbedder`` on a private copy
of ``.cache/embeddings`` (the shared cache is read, never written), shared by all fits so the training
queries' windows are embedded once. Evaluate the result with ``bench/gadget_attack.py --artifact``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import yaml

DEFAULT_DEFENCE = {"kind": "window_max", "grid": 2, "min_fraction": 0.5}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--routers", default="hybrid_llm,blend", help="configs/routers/<name>.yaml, comma-separated")
    parser.add_argument("--defence", default=json.dumps(DEFAULT_DEFENCE), help="the defence config, as JSON")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "defended")
    parser.add_argument("--control", action="store_true", help="also fit without the defence (not saved)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--backend", choices=["transformers", "onnx"], default="transformers",
                        help="the embedder's runtime (same vectors to 1e-6; onnx is faster on CPUs)")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from routers.config import build_router, load_config_file
    from routers.engines import build_embedder
    from routers.engines.cache import CachedEmbedder, cache_path

    defence = json.loads(args.defence)
    args.out.mkdir(parents=True, exist_ok=True)
    embedder = None
    with tempfile.TemporaryDirectory(prefix="fit-defended-") as cache_dir:
        for name in [r for r in args.routers.split(",") if r]:
            raw = yaml.safe_load((ROOT / "configs" / "routers" / f"{name}.yaml").read_text())
            raw.setdefault("hparam", {})["defence"] = defence
            raw["model_path"] = {"save_model_path": str(args.out / name), "load_model_path": str(args.out / name)}
            config_file = args.out / f"{name}.yaml"
            config_file.write_text(yaml.safe_dump(raw, sort_keys=False))
            config = load_config_file(config_file)
            engine = config.engines.embedder.model_copy(update={"num_threads": args.threads,
                                                                "backend": args.backend})
            if embedder is None:
                shared = cache_path(ROOT / ".cache" / "embeddings", engine)
                if shared.exists():
                    shutil.copy(shared, cache_path(cache_dir, engine))
                embedder = CachedEmbedder(build_embedder(engine), cache_dir)
            train = config.dataset("train")
            runs = [("defended", config)]
            if args.control:
                raw_control = {**raw, "hparam": {k: v for k, v in raw["hparam"].items() if k != "defence"}}
                control_file = Path(cache_dir) / f"{name}-control.yaml"
                control_file.write_text(yaml.safe_dump(raw_control, sort_keys=False))
                runs.append(("control", load_config_file(control_file)))
            for label, run_config in runs:
                router = build_router(run_config)
                router.bind_engines(embedder=embedder)
                started = time.perf_counter()
                metrics = router.fit(train)
                out = {"router": name, "run": label, "seconds": round(time.perf_counter() - started, 1),
                       "threshold": router.threshold, "train": metrics}
                if label == "defended":
                    out["saved_to"] = str(router.save(args.out / name))
                print(json.dumps(out, default=float), flush=True)


if __name__ == "__main__":
    main()
