"""Do the generative routers (causal-LM, policy) beat random on domains they never saw?

    # the shipped artifacts, scored on 1000 queries of held-out fold 0 (their train split saw every domain)
    .venv/bin/python bench/generative_ldo.py --router causallm_router --max-eval 1000
    .venv/bin/python bench/generative_ldo.py --router policy_router --max-eval 1000
    # retrain on fold 0's training domains only (the config's recipe: 160 balanced examples, 40 LoRA
    # steps, max_length 64; --set overrides any hparam), save to runs/ldo_generative/<tag>/, then score
    .venv/bin/python bench/generative_ldo.py --router causallm_router --train --tag causallm_ldo \\
        --set num_threads=2 --max-eval 1000
    # score an artifact written by --train
    .venv/bin/python bench/generative_ldo.py --router causallm_router --artifact runs/ldo_generative/causallm_ldo \\
        --tag causallm_ldo_rescore --max-eval 1000
    # a slow scorer (policy, ~3-10 s a query on 2 shared cores): stop at 16:04 UTC, resumable
    .venv/bin/python bench/generative_ldo.py --router policy_router --max-eval 1000 --deadline 16:04 --chunk 16

Protocol (``routers.evaluation.generalisation``):

* **Split**: train + test pooled (as ``bench/generalisation.py`` does), the ``task_name`` domains dealt
  by ``group_folds(pool, --folds, --seed)``; fold ``--fold`` (default 0, fixed before looking at any
  result) is held out. The router is fitted on the other folds' queries (``--train``); the held-out
  queries (a seeded ``--max-eval`` subsample of them) are scored once.
* **Shipped artifacts** were trained on the shipped train split, which holds every domain, so for them
  the held-out fold is *not* unseen (its MMLU subjects were in their training data); only the
  ``--train`` figures are honest unseen-domain figures.
* **Figures**: APGR, CPT(50/80/95%) and quality at half the always-large cost, with 95% percentile
  bootstrap intervals over queries (``summarise``). The curves come from the router's ``dataset_scores``
  (causal-LM: sigmoid of the small-vs-large name log-probability; policy: P(labels mapped to small)).
  The operating point is ``score < threshold`` (no greedy generation pass: the interval figures do not
  use it). ``random`` is its expectation (APGR 0.5, CPT(p) = p); ``hybrid_llm`` (the shipped config's
  hparams, cached embeddings) is fitted on the same training domains, for reference.

Scoring runs ``--chunk`` queries at a time in a seeded random order and is cached after each chunk in
``runs/ldo_generative/<tag>.scores.json`` (a rerun resumes); at ``--deadline`` it stops and reports the
queries scored so far, a uniform random subsample (flagged when under 1,000: not a reported figure).

Prints the table; writes ``bench/out/generative_ldo_<tag>.json`` (figures, held-out domains, the scores
of each query, timings) and ``.png`` (the cost-quality curves), and logs to stderr.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shlex
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np
import yaml

from bench.eval_routers import cached_embedder, load_split
from routers.base import Router
from routers.cli import format_interval_table
from routers.config import load_config_file
from routers.data import RoutingDataset
from routers.evaluation import GeneralisationResult, Protocol
from routers.evaluation.generalisation import (
    Fold,
    FoldRecord,
    Predictions,
    group_folds,
    predict,
    summarise,
    task_of,
)
from routers.evaluation.plot import plot_generalisation
from routers.progress import log, progress_bar, set_quiet
from routers.registry import router_class

GENERATIVE = ("causallm_router", "policy_router")
CONFIGS = {name: ROOT / "configs/routers" / f"{name}.yaml" for name in GENERATIVE}
RUNS = ROOT / "runs/ldo_generative"
MIN_REPORTED = 1000  # fewer held-out queries than this: a probe, not a reported figure


def held_out_split(folds: int, fold_index: int, seed: int) -> tuple[RoutingDataset, RoutingDataset, Fold]:
    """(training domains, held-out domains, the fold) of the pooled train + test queries."""
    train, test = load_split("train", False), load_split("test", False)
    pool = RoutingDataset(train.examples + test.examples, train.llm_data)
    fold = group_folds(pool, folds, seed)[fold_index]
    return pool.subset(fold.fit_indices), pool.subset(fold.eval_indices), fold


def subsample(data: RoutingDataset, n: int | None, seed: int) -> RoutingDataset:
    if n is None or n >= len(data):
        return data
    return data.subset(sorted(np.random.default_rng(seed).choice(len(data), size=n, replace=False).tolist()))


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """``--set key=value`` pairs, values read as YAML (numbers, booleans, lists)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--set expects key=value, got {pair!r}")
        out[key.strip()] = yaml.safe_load(value)
    return out


def score_in_chunks(router: Router, data: RoutingDataset, chunk: int, seed: int, cache: Path,
                    deadline: datetime | None) -> tuple[np.ndarray, float]:
    """``router.dataset_scores`` of ``data``, ``chunk`` queries at a time in a seeded random order, saved to
    ``cache`` after each chunk (a rerun resumes). Past ``deadline`` the rest stay NaN: the scored queries
    are then a uniform random subsample of ``data``. Returns the scores and the scoring seconds."""
    key = hashlib.sha256("\n".join(data.queries).encode()).hexdigest()
    scores = np.full(len(data), np.nan)
    if cache.exists():
        saved = json.loads(cache.read_text())
        if saved.get("queries_sha256") == key:
            scores = np.array([np.nan if s is None else s for s in saved["scores"]], dtype=np.float64)
            log(f"resuming {int(np.isfinite(scores).sum())} scores from {cache}")
    order = [int(i) for i in np.random.default_rng(seed).permutation(len(data)) if np.isnan(scores[i])]
    started = time.perf_counter()
    bar = progress_bar(f"{router.name}: held-out queries", total=len(data), unit="query")
    bar.update(len(data) - len(order))
    for start in range(0, len(order), chunk):
        if deadline is not None and datetime.now(UTC) >= deadline:
            log(f"deadline {deadline:%H:%M} UTC passed: stopping with {int(np.isfinite(scores).sum())} scored")
            break
        indices = sorted(order[start:start + chunk])
        scores[indices] = np.asarray(router.dataset_scores(data.subset(indices)), dtype=np.float64)
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps({"queries_sha256": key,
                                     "scores": [None if np.isnan(s) else float(s) for s in scores]}))
        bar.update(len(indices))
    bar.close()
    return scores, time.perf_counter() - started


def threshold_predictions(router: Router, data: RoutingDataset,
                          args: argparse.Namespace) -> tuple[Predictions, float, RoutingDataset]:
    """``predict``'s figures with the operating point ``score < threshold`` (no generation pass), on the
    queries scored before ``--deadline``; the scoring time; those queries."""
    pair = router.require_pair()
    complete = data.complete_for([pair.small, pair.large])
    deadline = None
    if args.deadline:
        hour, minute = (int(x) for x in args.deadline.split(":"))
        deadline = datetime.now(UTC).replace(hour=hour, minute=minute, second=0, microsecond=0)
    scores, seconds = score_in_chunks(router, complete, args.chunk, args.seed, RUNS / f"{args.tag}.scores.json",
                                      deadline)
    done = np.flatnonzero(np.isfinite(scores))
    complete, scores = complete.subset(done.tolist()), scores[done]
    matrix = complete.performance_matrix([pair.small, pair.large])
    costs = router.cost_model(complete)
    overhead = np.broadcast_to(np.asarray(costs.overhead, dtype=np.float64), scores.shape).copy()
    return Predictions(scores, scores < router.threshold, matrix[:, 0], matrix[:, 1],
                       np.asarray(costs.small, dtype=np.float64), np.asarray(costs.large, dtype=np.float64),
                       overhead, costs.cascade, np.asarray([task_of(e) for e in complete.examples], dtype=object)
                       ), seconds, complete


def record(fold: Fold, n_fit: int, n_eval: int, params: dict[str, Any], fit_seconds: float,
           eval_seconds: float) -> FoldRecord:
    return FoldRecord(index=fold.index, held_out_tasks=list(fold.held_out_tasks), n_fit=n_fit, n_eval=n_eval,
                      params=params, fit_seconds=round(fit_seconds, 3), eval_seconds=round(eval_seconds, 3))


def generative_router(args: argparse.Namespace, fit_data: RoutingDataset) -> tuple[Router, dict[str, Any], float]:
    """The router to score: loaded from ``--artifact`` (default: the shipped one), or trained on the
    training domains (``--train``) and saved to ``runs/ldo_generative/<tag>/``. Returns its training time."""
    cls = router_class(args.router)
    overrides = parse_overrides(args.set)
    if not args.train:
        artifact = args.artifact or ROOT / "artifacts" / args.router
        log(f"loading {artifact}")
        return cls.load(artifact, **overrides), {"artifact": str(artifact), **overrides}, 0.0
    params = {**load_config_file(CONFIGS[args.router]).router_params(), **overrides}
    router = cls(params, fit_data.llm_data)
    log(f"training {args.router} on the {len(fit_data)} queries of the training domains: {json.dumps(overrides)}")
    started = time.perf_counter()
    metrics = router.fit(fit_data)
    seconds = time.perf_counter() - started
    out = args.artifact or RUNS / args.tag
    router.save(out)
    (Path(out) / "build_report.json").write_text(json.dumps(
        {"protocol": "leave-domains-out fold (bench/generative_ldo.py)", "fold": args.fold, "folds": args.folds,
         "seed": args.seed, "n_fit_pool": len(fit_data), "params": params, "fit": metrics,
         "train_seconds": round(seconds, 1)}, indent=2, default=str))
    log(f"trained in {seconds:.0f}s ({json.dumps(metrics, default=str)}); saved to {out}")
    return router, {"artifact": str(out), "trained_here": True, **params}, seconds


def baseline_results(fit_data: RoutingDataset, eval_data: RoutingDataset, fold: Fold, protocol: Protocol,
                     seed: int, hybrid: bool) -> list[GeneralisationResult]:
    """random (its expectation) and, for reference, hybrid_llm fitted on the same training domains."""
    results = []
    names = ["random", "hybrid_llm"] if hybrid else ["random"]
    for name in names:
        params: dict[str, Any] = {"seed": seed}
        config_path = ROOT / "configs/routers/hybrid_llm.yaml"
        if name == "hybrid_llm":
            params = {**load_config_file(config_path).router_params(), **params}
        router = router_class(name)(params, fit_data.llm_data)
        if name == "hybrid_llm":
            embedder = cached_embedder(config_path)
            embedder.embed(fit_data.queries + eval_data.queries)
            router.bind_engines(embedder=embedder)
        started = time.perf_counter()
        router.fit(fit_data)
        fitted = time.perf_counter()
        predictions = predict(router, eval_data)
        rec = record(fold, len(fit_data), len(predictions), params, fitted - started, time.perf_counter() - fitted)
        results.append(summarise(router, "leave_domains_out", predictions, [rec], protocol))
    return results


def reproduce_command(argv: list[str]) -> str:
    return " ".join([".venv/bin/python", "bench/generative_ldo.py", *map(shlex.quote, argv)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--router", choices=GENERATIVE, required=True)
    parser.add_argument("--artifact", type=Path,
                        help="artifact to score (default: artifacts/<router>); with --train: where to save")
    parser.add_argument("--train", action="store_true", help="retrain on the fold's training domains first")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="hparam override (YAML value), repeatable: the config's hparams + these")
    parser.add_argument("--tag", help="output name (default: <router>_shipped, or <router>_ldo with --train)")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--fold", type=int, default=0, help="which fold to hold out (fixed: 0)")
    parser.add_argument("--max-eval", type=int, help="seeded subsample of the held-out queries")
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--chunk", type=int, default=64, help="queries scored between cache writes")
    parser.add_argument("--deadline", metavar="HH:MM",
                        help="stop scoring at this UTC time; report the (uniform random) scored subset")
    parser.add_argument("--no-hybrid", action="store_true", help="skip the hybrid_llm reference")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/out")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    set_quiet(args.quiet)
    if not args.tag:
        args.tag = (f"{args.router}_ldo" if args.train else
                    f"{args.router}_{args.artifact.name}" if args.artifact else f"{args.router}_shipped")
    command = reproduce_command(sys.argv[1:] if argv is None else argv)
    started = time.time()

    fit_data, held_out, fold = held_out_split(args.folds, args.fold, args.seed)
    eval_data = subsample(held_out, args.max_eval, args.seed)
    log(f"fold {fold.index}/{args.folds}: {len(fit_data)} training-domain queries; held out "
        f"{len(fold.held_out_tasks)} domains, {len(held_out)} queries, scoring {len(eval_data)}: "
        f"{', '.join(fold.held_out_tasks)}")
    if len(eval_data) < MIN_REPORTED:
        log(f"WARNING: {len(eval_data)} < {MIN_REPORTED} held-out queries: a timing probe, not a reported figure")
    protocol = Protocol(n_resamples=args.bootstrap, seed=args.seed)

    router, params, train_seconds = generative_router(args, fit_data)
    predictions, score_seconds, eval_data = threshold_predictions(router, eval_data, args)  # baselines: same queries
    rate = len(predictions) / max(score_seconds, 1e-9)
    log(f"scored {len(predictions)} queries in {score_seconds:.0f}s ({rate:.2f}/s)")
    if len(predictions) < MIN_REPORTED:
        print(f"WARNING: only {len(predictions)} < {MIN_REPORTED} held-out queries scored: not a reported figure")
    rec = record(fold, len(fit_data) if args.train else 0, len(predictions), params, train_seconds, score_seconds)
    results = [summarise(router, "leave_domains_out", predictions, [rec], protocol),
               *baseline_results(fit_data, eval_data, fold, protocol, args.seed, not args.no_hybrid)]

    table = format_interval_table(results)
    print(table)
    if not args.train:
        print(f"NOTE: {args.router} here is a trained artifact ({params['artifact']}); if it was trained on the "
              "shipped train split, the held-out domains were in its training data (not strictly unseen).")
    share = float(predictions.use_large.mean())
    print(f"{args.router}: scores mean {predictions.scores.mean():.3f}, sd {predictions.scores.std():.3f}; "
          f"large share at threshold {router.threshold}: {share:.3f}; scoring {score_seconds:.0f}s"
          + (f"; training {train_seconds:.0f}s" if args.train else ""))
    print(f"reproduce: {command}")
    wall = time.time() - started
    print(f"wall time {wall:.0f}s")

    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / f"generative_ldo_{args.tag}.json"
    summary = {
        "command": command, "router": args.router, "params": params, "trained_on_fold": args.train,
        "fold": fold.index, "folds": args.folds, "seed": args.seed, "held_out_tasks": list(fold.held_out_tasks),
        "n_fit_pool": len(fit_data), "n_held_out": len(held_out), "n_eval": len(predictions),
        "train_seconds": round(train_seconds, 1), "score_seconds": round(score_seconds, 1),
        "train_metrics": getattr(router, "train_metrics", None), "wall_seconds": round(wall, 1),
        "results": [r.model_dump() for r in results],
        "scores": [round(float(s), 6) for s in predictions.scores],
    }
    out.write_text(json.dumps(summary, indent=2, default=float))
    log(f"wrote {out}")
    title = (f"{args.router} ({'retrained on the training domains' if args.train else 'shipped artifact'}), "
             f"{len(predictions)} queries of {len(fold.held_out_tasks)} held-out domains")
    log(f"wrote {plot_generalisation(results, out.with_suffix('.png'), title=title)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
