"""Train the Hybrid LLM router (or any embedding router: the router config's ``router:`` key, e.g.
``domain_prior`` or ``blend``): embed queries with Ray Data, fit, save, evaluate, plot.

    python -m train_jobs.hybrid --config configs/train/hybrid.yaml
    ray job submit --working-dir . -- python -m train_jobs.hybrid --config configs/train/hybrid.yaml

Another embedding router: a job config whose ``router_config`` names its router config (e.g.
``configs/routers/domain_prior.yaml``).

Embeddings are cached on disk (``embedding_cache_dir``), keyed by the embedder configuration and each
text's hash: a rerun (another MLP mode, new hyperparameters) embeds only queries it has not seen, and
starts no Ray Data pipeline at all when there are none.
"""

from __future__ import annotations

import sys
from typing import Any

from pydantic import Field

from routers.config import build_router, load_config_file
from routers.embedding import EmbeddingRouter
from routers.engines import EmbedderConfig
from routers.errors import ConfigError
from routers.evaluation import evaluate_routers
from routers.evaluation.plot import plot_curves
from routers.paths import config_file, resolve_model_path, resolve_path
from routers.progress import log
from routers.registry import router_class
from train_jobs.common import JobConfig, run_job, write_json
from train_jobs.embeddings import embed_with_cache


class HybridJobConfig(JobConfig):
    router_config: str = "configs/routers/hybrid_llm.yaml"
    embedding_cache_dir: str | None = Field(
        default=None, description="embedding cache (safetensors); default <output_dir>/embedding_cache")


def train_hybrid(config: HybridJobConfig) -> dict[str, Any]:
    router_cfg = load_config_file(config_file(config.router_config))
    router = build_router(router_cfg, router_cfg.router or "hybrid_llm")
    train = router_cfg.dataset("train")
    test = router_cfg.dataset("test") if router_cfg.data_path.routing_data_test else None
    if not isinstance(router, EmbeddingRouter):
        raise ConfigError(f"{config.router_config}: {type(router).__name__} does not route from query embeddings")
    embedder_cfg: EmbedderConfig = router_cfg.engines.embedder or router.default_embedder_config()
    embedder_cfg = embedder_cfg.model_copy(update={
        "model": resolve_model_path(embedder_cfg.model, f"{config.router_config}: engines.embedder.model")})
    texts = train.queries + (test.queries if test is not None else [])
    out = config.output_path()
    cache_dir = resolve_path(config.embedding_cache_dir) if config.embedding_cache_dir else out / "embedding_cache"
    log(f"embedding {len(set(texts))} queries (cache {cache_dir}; misses on {config.ray.num_workers} Ray Data actors)")
    embedder, embedding = embed_with_cache(texts, embedder_cfg, config.ray, cache_dir)
    router.bind_engines(embedder=embedder)
    metrics = router.fit(train)
    summary: dict[str, Any] = {"router": router.name, "train": metrics, "n_train": len(train), "embedding": embedding}
    save_to = router_cfg.model_path.save_model_path
    if not save_to:
        raise ConfigError(f"{config.router_config}: model_path.save_model_path is required")
    summary["saved_to"] = str(router.save(resolve_path(save_to)))
    if test is not None:
        baselines = []
        for name in ("random", "oracle"):
            baseline = router_class(name)({}, router.llm_data)
            baseline.fit(train)
            baselines.append(baseline)
        results = evaluate_routers([router, *baselines], test)
        summary["test"] = {report.router: report.to_dict() for report, _ in results}
        summary["plot"] = str(plot_curves(results, out / "curves.png", title=f"{router.name} router, test split"))
    write_json(out / "metrics.json", summary)
    return summary


def main(argv: list[str] | None = None) -> int:
    return run_job("hybrid", HybridJobConfig, train_hybrid, argv)


if __name__ == "__main__":
    sys.exit(main())
