"""Build the default AutoMix artifact by really sampling verdicts from a small CPU model.

The published routing data (``llmrouter data get routellm``, read from the data directory) has no
verification fields, so this samples them: the small model (``models/smollm2-135m-instruct``) verifies
Mixtral's GSM8K answers on a seeded subset of the training file, N verdicts per answer in one generate call.
It writes the verdicts it sampled, without the public text (``verifier_votes.jsonl``: one line per query,
keyed by the query's sha256 and the model name, ``routers.automix.stored_votes``), so refits join them onto
the data directory's file instead of sampling again; reports a held-out evaluation (fit on 70 %, evaluate
on 30 %), then fits the policy on the whole subset and saves it.

    python -m routers.automix.build_artifact --queries 96 --samples 4 --out artifacts/automix
    python -m routers.automix.build_artifact --reuse-votes    # refit from the data + OUT/verifier_votes.jsonl
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path
from typing import Any

from routers.automix.router import AutomixRouter
from routers.automix.stored_votes import write_verifier_votes
from routers.data import RoutingDataset, load_llm_data
from routers.engines import GeneratorConfig, build_generator
from routers.evaluation import evaluate_router
from routers.paths import resolve_path

VOTES_FILE = "verifier_votes.jsonl"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", default="${LLMROUTER_DATA}/gsm8k_train.jsonl")
    parser.add_argument("--llm-data", default="${LLMROUTER_DATA}/llm_candidates.json")
    parser.add_argument("--verifier", default="models/smollm2-135m-instruct")
    parser.add_argument("--queries", type=int, default=96)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=6)
    parser.add_argument(
        "--num-bins", type=int, default=5, help="N=4 gives p_ver in {0, .25, .5, .75, 1}: 5 bins"
    )
    parser.add_argument("--method", default="POMDP")
    parser.add_argument("--out", default="artifacts/automix")
    parser.add_argument(
        "--reuse-votes", "--reuse-samples", dest="reuse_votes", action="store_true",
        help=f"sample nothing: refit on the --train queries that OUT/{VOTES_FILE} has verdicts for",
    )
    return parser.parse_args(argv)


def router_config(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "method": args.method,
        "num_samples": args.samples,
        "verifier_max_tokens": args.max_tokens,
        "num_bins": args.num_bins,
    }


def seeded_subset(data: RoutingDataset, size: int, seed: int = 0) -> RoutingDataset:
    indices = sorted(random.Random(seed).sample(range(len(data)), min(size, len(data))))
    return data.subset(indices)


def sampled_data(args: argparse.Namespace, out: Path) -> tuple[RoutingDataset, dict[str, Any]]:
    llm_data = load_llm_data(resolve_path(args.llm_data))
    votes_path = out / VOTES_FILE
    data = RoutingDataset.from_files(resolve_path(args.train), llm_data)
    router = AutomixRouter(router_config(args), llm_data)
    pair = router.resolve_pair(data)
    data = data.complete_for([pair.small, pair.large])
    if args.reuse_votes:
        stored = AutomixRouter({**router_config(args), "verifier_votes": str(votes_path), "verified_only": True},
                               llm_data)
        stored.resolve_pair(data)
        return stored.training_set(data), {"reused": str(votes_path)}
    subset = seeded_subset(data, args.queries)
    router.bind_engines(generators={"small": build_generator(GeneratorConfig(model=args.verifier))})
    started = time.time()
    enriched = router.sample_verifications(subset)
    info = {"sampling_seconds": round(time.time() - started, 1), "verdicts": router.last_sampling_report}
    write_verifier_votes(enriched, votes_path, public=subset)
    return enriched, info


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = resolve_path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data, info = sampled_data(args, out)
    fit_part, held_out = data.split(0.3, seed=0)
    probe = AutomixRouter(router_config(args), data.llm_data)
    probe.fit(fit_part)
    report, _ = evaluate_router(probe, held_out)
    router = AutomixRouter(router_config(args), data.llm_data)
    train_metrics = router.fit(data)
    router.save(out)
    summary = {**info, "train": train_metrics, "held_out_30pct": report.to_dict()}
    (out / "build_report.json").write_text(json.dumps(summary, indent=2, default=float))
    print(json.dumps(summary, indent=2, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
