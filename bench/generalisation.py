"""Routing quality on seen vs unseen domains, with 95% bootstrap intervals.

    python bench/generalisation.py                        # 5 folds, 1000 resamples, every query
    python bench/generalisation.py --queries 3000         # a seeded subsample, for a quick look
    python bench/generalisation.py --tune                 # choose Hybrid's hparams inside each fit
    python bench/generalisation.py --in-domain-folds      # + a pooled in-domain figure (seen-cv)
    python bench/generalisation.py --resample domains     # intervals over domains, and the default-router rule

Two figures per router, side by side (three with ``--in-domain-folds``):

* **seen**: fit on the shipped train files (MMLU + GSM8K), evaluate on the test files. Their MMLU subjects
  are the same, so this is how a router does on domains it was trained on.
* **unseen**: train + test merged, the task_name groups (each MMLU subject, GSM8K) dealt into ``--folds``
  folds; each fold is scored by a router fitted on the others and the out-of-fold predictions pooled
  (``routers.evaluation.generalisation``).
* **seen-cv** (``--in-domain-folds``): the same pool and ``--folds`` count, but random query folds
  stratified by task_name, so each fold's domains are also in its training part (``in_domain_folds``;
  hparams chosen by inner query folds). An in-domain figure over every query, as precise as the unseen
  one, where **seen** rests on the test split alone.

APGR, CPT(50/80/95%) and quality at half the always-large cost, each with a 95% percentile bootstrap
interval over queries, or with ``--resample domains`` over domains (``task_name``: whole domains drawn
with replacement, then queries within each), which covers the largest source of spread: which domains a
user's traffic comes from. With it the script also applies the rule the shipped default router is chosen
by (``default_router_rule``): the highest lower bound of the unseen APGR. ``random`` reports its
expectation (APGR 0.5, CPT(p) = p). Routers: ``hybrid_llm`` (the shipped config's hparams, or
``--tune``'s choice), ``random``, ``oracle`` and every trainable router
of the registry that needs only an embedder, with its default hparams. Routers that need no engine can be
named with ``--routers``: ``bert`` (MiniLM fine-tuned end to end, six fine-tunes per run, so not in the
default set) runs with ``ROUTER_PARAMS``'s CPU-sized settings.

Query embeddings come from the disk cache of ``bench/eval_routers.py`` (``.cache/embeddings``, the
shipped config's embedder settings), so a run after ``eval_routers.py`` embeds nothing; the embedder is
only loaded when a selected router needs it. Writes
``bench/out/generalisation.json`` and every mode's cost-quality curves side by side,
``bench/out/generalisation.png`` (``--plot`` elsewhere; ``bench/generalisation.png`` is one full run's).
The JSON keeps each result's curve (at most ``CURVE_POINTS`` points), so ``--include OTHER.json`` adds
the routers of another run (bert's, the generative routers' of ``bench/generative_ldo.py``) to the
table and the picture without refitting them.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np

from bench.eval_routers import cached_embedder, load_split
from routers.base import Router
from routers.cli import MODE_LABELS, format_interval_table
from routers.config import load_config_file
from routers.data import RoutingDataset
from routers.engines.cache import CachedEmbedder
from routers.errors import RouterError
from routers.evaluation import GeneralisationResult, Protocol, in_domain, in_domain_folds, leave_domains_out
from routers.evaluation.generalisation import DEFAULT_INNER_FOLDS, RouterFactory
from routers.evaluation.metrics import Curve
from routers.evaluation.plot import plot_generalisation
from routers.progress import log, set_quiet
from routers.registry import canonical_name, router_class, router_names

BASE_ROUTERS = ("hybrid_llm", "random", "oracle")
# --tune: the two knobs eval_routers.py found to matter most (MLP width, L2 penalty), on the config's
# labels and epochs; 4 points keep 5 outer x 3 inner folds to minutes on a CPU.
HYBRID_TUNING_GRID: list[dict[str, Any]] = [
    {"hidden_layer_sizes": hidden, "alpha": alpha} for hidden in ([16], [64]) for alpha in (1.0, 10.0)
]
# Settings that differ from a router's defaults here, for the CPU budget of 6 fits (1 seen + 5 folds).
# bert: its config's recipe on 1500 queries of <= 96 tokens (~94 steps per fit); one torch thread, since
# two threads on two shared cores measured 5x slower per step than one. Not tuned on any held-out data.
ROUTER_PARAMS: dict[str, dict[str, Any]] = {
    "bert": {"max_train_examples": 1500, "max_length": 96, "threads": 1},
}


#: points of each curve kept in the JSON (both ends included): enough for a plot, small enough to share
CURVE_POINTS = 1001


def curve_points(curve: Curve | None) -> dict[str, list[float]] | None:
    if curve is None:
        return None
    n = len(curve.large_share)
    keep = np.unique(np.linspace(0, n - 1, min(n, CURVE_POINTS)).round().astype(int))
    return {"large_share": curve.large_share[keep].tolist(), "quality": curve.quality[keep].tolist(),
            "cost": curve.cost[keep].tolist()}


def result_record(result: GeneralisationResult) -> dict[str, Any]:
    return {"domains": MODE_LABELS[result.mode], **result.model_dump(), "curve": curve_points(result.curve)}


def load_results(path: Path) -> list[GeneralisationResult]:
    """The results another run of this script (or ``bench/generative_ldo.py``) wrote, curves included."""
    results = []
    for record in json.loads(path.read_text())["results"]:
        fields = {k: v for k, v in record.items() if k not in ("domains", "curve")}
        result = GeneralisationResult.model_validate(fields)
        points = record.get("curve")
        if points is not None:
            curve = Curve(large_share=np.asarray(points["large_share"]), quality=np.asarray(points["quality"]),
                          cost=np.asarray(points["cost"]), thresholds=np.full(len(points["quality"]), np.nan))
            result = result.model_copy(update={"curve": curve})
        results.append(result)
    return results


def engine_roles(name: str, llm_data: dict[str, Any]) -> frozenset[str]:
    probe = router_class(name)({}, llm_data)
    return probe.training_engine_roles() | probe.evaluation_engine_roles()


def embedding_only_routers(llm_data: dict[str, Any]) -> list[str]:
    """Trainable registry routers whose fit and scoring need nothing but the query embedder."""
    names = []
    for name in router_names():
        if name in BASE_ROUTERS:
            continue
        try:
            roles = engine_roles(name, llm_data)
        except (RouterError, ImportError) as exc:  # a router another change is still adding
            log(f"skipping {name}: {exc}")
            continue
        if router_class(name).trainable and roles == {"embedder"}:
            names.append(name)
    return names


def subsample(train: RoutingDataset, test: RoutingDataset, n: int | None,
              seed: int) -> tuple[RoutingDataset, RoutingDataset]:
    """A seeded ``n``-query sample of train + test, each query kept in its own split."""
    total = len(train) + len(test)
    if n is None or n >= total:
        return train, test
    picked = np.sort(np.random.default_rng(seed).choice(total, size=n, replace=False))
    return (train.subset(picked[picked < len(train)].tolist()),
            test.subset((picked[picked >= len(train)] - len(train)).tolist()))


def factory(name: str, params: dict[str, Any], llm_data: dict[str, Any],
            embedder: CachedEmbedder | None) -> RouterFactory:
    """Builds router ``name``; ``embedder`` None for routers that need none (bert carries its own encoder)."""
    def make(grid_point: Any) -> Router:
        router = router_class(name)({**params, **grid_point}, llm_data)
        return router if embedder is None else router.bind_engines(embedder=embedder)

    return make


def run_router(name: str, make: RouterFactory, train: RoutingDataset, test: RoutingDataset, folds: int,
               grid: list[dict[str, Any]] | None, protocol: Protocol,
               seen_cv: bool = False) -> list[GeneralisationResult]:
    """Seen (test split), optionally seen-cv (pooled query folds), and unseen figures, in panel order."""
    started = time.time()
    results = [in_domain(make, train, test, grid, protocol)]
    pool = RoutingDataset(train.examples + test.examples, train.llm_data)
    if seen_cv:
        results.append(in_domain_folds(make, pool, folds, grid, protocol))
    results.append(leave_domains_out(make, pool, folds, grid, protocol))
    others = ", ".join(f"{MODE_LABELS[r.mode]} {r.metrics['apgr'].value:.3f}" for r in results[1:])
    log(f"{name}: seen APGR {results[0].metrics['apgr'].value:.3f}, {others} ({time.time() - started:.1f}s)")
    return results


def default_router_rule(results: list[GeneralisationResult]) -> str | None:
    """The rule the shipped default router is chosen by: on domains the router never saw, the highest lower
    bound of the APGR interval, so the choice holds for a pessimistic draw of the user's domains as well
    as for these. None when the intervals were not computed."""
    unseen = [r for r in results if r.mode == "leave_domains_out" and not r.expectation
              and r.router != "oracle" and r.metrics["apgr"].low is not None]
    if not unseen:
        return None
    ranked = sorted(unseen, key=lambda r: r.metrics["apgr"].low, reverse=True)
    listing = ", ".join(f"{r.router} {r.metrics['apgr'].low:.3f}" for r in ranked)
    return f"default-router rule (highest lower bound of unseen APGR): {ranked[0].router} ({listing})"


def reproduce_command(argv: list[str]) -> str:
    return " ".join([".venv/bin/python", "bench/generalisation.py", *map(shlex.quote, argv)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folds", type=int, default=5,
                        help="leave-domains-out folds over task_name groups (and --in-domain-folds' query folds)")
    parser.add_argument("--bootstrap", type=int, default=1000, help="query resamples per interval")
    parser.add_argument("--queries", type=int, help="a seeded subsample of this many train+test queries")
    parser.add_argument("--routers",
                        help=f"comma-separated (default: {','.join(BASE_ROUTERS)} + embedding-only ones)")
    parser.add_argument("--tune", action="store_true",
                        help=f"choose Hybrid's hparams per fit from {len(HYBRID_TUNING_GRID)} points "
                        "by inner group folds")
    parser.add_argument("--inner-folds", type=int, default=DEFAULT_INNER_FOLDS)
    parser.add_argument("--in-domain-folds", action="store_true",
                        help="also the pooled in-domain figure (seen-cv): --folds random query folds over "
                        "train+test, stratified by task_name")
    parser.add_argument("--config", type=Path, default=ROOT / "configs/routers/hybrid_llm.yaml",
                        help="Hybrid config: embedder settings and hparams")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resample", choices=["queries", "domains"], default="queries",
                        help="what the intervals resample: queries, or domains then queries within them")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/out")
    parser.add_argument("--plot", type=Path,
                        help="the seen (/ seen-cv) / unseen cost-quality curves' PNG "
                        "(default: OUT/generalisation.png)")
    parser.add_argument("--include", type=Path, action="append", default=[], metavar="JSON",
                        help="add the results of another run's JSON (with curves) to the table and plot")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    set_quiet(args.quiet)
    started = time.time()

    train, test = subsample(load_split("train", False), load_split("test", False), args.queries, args.seed)
    llm_data = dict(train.llm_data)
    names = ([canonical_name(n) for n in args.routers.split(",") if n] if args.routers
             else [*BASE_ROUTERS, *embedding_only_routers(llm_data)])
    needs_embedder = {name: "embedder" in engine_roles(name, llm_data) for name in names}
    embedder = cached_embedder(args.config) if any(needs_embedder.values()) else None
    if embedder is not None:
        # Once up front: every fold then reads its vectors from memory.
        log(f"train {len(train)} / test {len(test)} queries; embedding (cached in {embedder.path})")
        embedder.embed(train.queries + test.queries)
    hybrid_params = {**load_config_file(args.config).router_params(), "seed": args.seed}
    protocol = Protocol(n_resamples=args.bootstrap, seed=args.seed, inner_folds=args.inner_folds,
                        resample=args.resample)

    results: list[GeneralisationResult] = []
    router_params = {name: hybrid_params if name == "hybrid_llm" else {"seed": args.seed, **ROUTER_PARAMS.get(name, {})}
                     for name in names}
    for name in names:
        grid = HYBRID_TUNING_GRID if (args.tune and name == "hybrid_llm") else None
        make = factory(name, router_params[name], llm_data, embedder if needs_embedder[name] else None)
        results.extend(run_router(name, make, train, test, args.folds, grid, protocol, args.in_domain_folds))
    for path in args.include:
        results.extend(load_results(path))

    print(format_interval_table(results))
    rule = default_router_rule(results)
    if rule is not None:
        print(rule)
    print(f"reproduce: {reproduce_command(sys.argv[1:] if argv is None else argv)}")
    wall = time.time() - started
    print(f"wall time {wall:.0f}s")
    args.out.mkdir(parents=True, exist_ok=True)
    summary = {
        "command": reproduce_command(sys.argv[1:] if argv is None else argv),
        "embedder": None if embedder is None else embedder.model_name, "n_train": len(train),
        "n_test": len(test), "folds": args.folds, "in_domain_folds": args.in_domain_folds,
        "hybrid_params": hybrid_params, "router_params": router_params,
        "tuning_grid": HYBRID_TUNING_GRID if args.tune else None,
        "wall_seconds": round(wall, 1), "resample": args.resample, "default_router_rule": rule,
        "results": [result_record(r) for r in results],
    }
    (args.out / "generalisation.json").write_text(json.dumps(summary, indent=2, default=float))
    log(f"wrote {args.out / 'generalisation.json'}")
    plotted = [r for r in results if r.curve is not None]
    for result in results:
        if result.curve is None:
            log(f"{result.router} ({MODE_LABELS[result.mode]}): no curve in its JSON, left out of the plot")
    log(f"wrote {plot_generalisation(plotted, args.plot or args.out / 'generalisation.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
