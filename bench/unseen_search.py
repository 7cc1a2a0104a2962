"""Search for a router that generalises to unseen domains, on cached embeddings (exploration log).

    python bench/unseen_search.py                      # every variant, point APGRs (seen / unseen)
    python bench/unseen_search.py --only router_blend  # some of them
    python bench/unseen_search.py --bootstrap 1000     # with 95% bootstrap intervals

The same protocol as ``bench/generalisation.py`` (``routers.evaluation.generalisation``), on numpy arrays
so a variant costs seconds: *seen* = fit on the train files, score the test files; *unseen* = train + test
pooled, the task_name groups dealt into 5 outer folds by ``group_folds`` (seed 0), out-of-fold scores
pooled, APGR of the pooled curve (``curve_metrics``), percentile bootstrap over queries. A variant marked
``inner`` chooses among its grid points inside each outer fit, by pooled APGR over 3 inner group folds of
the *training* domains (inner seed 1 + fold index, as ``select_params``); the outer held-out fold is never
read to choose anything. Variants marked ``fixed`` have no tuned choice (settings fixed before the run).

Every variant that was looked at is in ``variants()`` (the run prints how many are defined), so the exploration is
documented: a figure of the best of many fixed variants is *not* an honest estimate. The procedure shipped
as ``routers/blend`` tunes its one choice (the blend weight) by inner group folds inside each fit; its
*design* (a head for P(small right), CDF scales) came out of this search, so ``family_inner`` checks that
inner folds alone pick that family, and ``--fold-seed 1`` re-deals the outer folds for a fresh look.

Results (2 shared CPU cores, 2026-12-01; point APGRs, 5 outer folds, fold seed 0; 33 variants run):

    variant                  how chosen            seen   unseen
    hybrid_shipped           fixed (shipped)       0.663  0.571
    ridge_gap_a1e3 / a1e4    fixed                 0.662  0.502 / 0.667  0.525
    ridge_gap_inner          inner alpha           0.657  0.505
    ridge_lab_a1e4           fixed                 0.659  0.570
    ridge_gap_feat_a1e4      fixed                 0.669  0.533
    ridge_gap_bal05_a1e4     fixed                 0.653  0.534
    logistic_c1e-3           fixed                 0.660  0.573   (C 1e-4..1e-2: 0.553..0.574)
    logistic_inner           inner C               0.650  0.570
    logistic_feat_c1e-3      fixed                 0.662  0.548
    hybrid_feat              fixed                 0.656  0.574
    hybrid_prob_tau1         fixed                 0.659  0.521
    hybrid_bal05             fixed                 0.638  0.566
    hybrid_bag5              fixed                 0.657  0.566
    ens_hybrid_ridge         fixed                 0.671  0.561
    ens_hybrid_logistic      fixed                 0.663  0.582
    logistic_small_right     fixed                 0.638  0.603   (C 1e-4..1e-2: 0.594..0.601)
    hybrid_small_right       fixed                 0.648  0.597
    blend_lr_w0.25/.5/.75    fixed                 0.658/0.654/0.647  0.595/0.605/0.610
    blend_lr_inner           inner w               0.638  0.609
    blend_hyb_inner          inner w               0.648  0.609
    router_blend (shipped)   inner w               0.638  0.601   (bench/generalisation.py: same)
    family_inner             inner, 5 families     -      0.594   (picked small_right in 5/5 folds)
    (defined, not run for lack of CPU time: hybrid_tuned4, mf_default, ens_hybrid_mf, ens_hf_lf)

95% bootstrap intervals (1000 resamples) of the main ones, seen / unseen:
    hybrid_shipped        0.663 [0.630, 0.696] / 0.571 [0.554, 0.588]   (bench/generalisation.py)
    logistic_c1e-3        0.660 [0.627, 0.692] / 0.573 [0.556, 0.589]
    ens_hybrid_logistic   0.663 [0.630, 0.696] / 0.582 [0.566, 0.599]
    hybrid_bag5           0.657 [0.623, 0.689] / 0.566 [0.549, 0.582]
    hybrid_feat           0.656 [0.625, 0.686] / 0.574 [0.557, 0.591]
    hybrid_small_right    0.648 [0.617, 0.679] / 0.597 [0.582, 0.613]
    logistic_small_right  0.638 [0.607, 0.670] / 0.603 [0.587, 0.619]
    blend_lr_inner        0.638 [0.607, 0.670] / 0.609 [0.594, 0.625]
    router_blend          0.638 [0.607, 0.670] / 0.601 [0.586, 0.617]   (bench/generalisation.py)
Paired (same queries) unseen APGR, router_blend - hybrid_shipped (``--paired router_blend,hybrid_shipped``):
    5 folds +0.030 [+0.020, +0.040]; 10 folds 0.606 - 0.570 = +0.035 [+0.026, +0.045];
    3 folds 0.604 - 0.558 = +0.046 [+0.035, +0.058]; every resample > 0 in each.

Lessons: the target matters far more than the model. Regressing the gap q_small - q_large (ridge_gap,
probabilistic tau 1) transfers worst; 1[q_small >= q_large] (Hybrid's label) is better; the small
model's own correctness 1[q_small right], which ignores the large model, transfers best (it reads as
"how hard is this for the small model", which carries over to new subjects). Text features, domain
balancing and bagging did not help on unseen domains.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np
from threadpoolctl import threadpool_limits

from bench.eval_routers import cached_embedder, load_split
from routers.data import RoutingDataset
from routers.evaluation.bootstrap import bootstrap_metrics
from routers.evaluation.generalisation import Predictions, curve_metrics, group_folds
from routers.hybrid.labels import make_labels
from routers.hybrid.mlp import fit_mlp, squash_scores

CONFIG = ROOT / "configs/routers/hybrid_llm.yaml"
SHIPPED_MLP = {"hidden": (64,), "alpha": 10.0, "max_iter": 30, "lr": 1e-3}

#: a fitted scorer: features of queries -> small-suitability scores
Scorer = Callable[[np.ndarray], np.ndarray]


@dataclass
class Data:
    """Train + test pooled (train first): embeddings, text features, gaps, costs and domains."""

    pool: RoutingDataset
    n_train: int
    x: np.ndarray
    feats: np.ndarray
    gap: np.ndarray
    small: np.ndarray
    large: np.ndarray
    cost_small: np.ndarray
    cost_large: np.ndarray
    tasks: np.ndarray


# --- cheap label-free query features ---------------------------------------------------------------
OPTION_RE = re.compile(r"^\s*[A-J][.)]\s", re.MULTILINE)
MATH_CHARS = set("+-*/=^<>%$")


def text_features(query: str) -> list[float]:
    """Length (log words / chars), answer options, digit and math-symbol shares, MCQ format, lines."""
    n_chars = max(len(query), 1)
    words = query.split()
    options = len(OPTION_RE.findall(query))
    return [
        float(np.log1p(len(words))),
        float(np.log1p(n_chars)),
        float(options),
        sum(ch.isdigit() for ch in query) / n_chars,
        sum(ch in MATH_CHARS for ch in query) / n_chars,
        float(query.rstrip().endswith("Answer:")),
        float(np.log1p(query.count("\n"))),
    ]


def load_data() -> Data:
    train, test = load_split("train", False), load_split("test", False)
    pool = RoutingDataset(train.examples + test.examples, train.llm_data)
    small_name, large_name = pool.models[0], pool.models[1]
    # Mixtral (cheap) is listed first, GPT-4 second: check it from the prices, not the order.
    if pool.llm_data[small_name].input_price > pool.llm_data[large_name].input_price:
        small_name, large_name = large_name, small_name
    quality = pool.performance_matrix([small_name, large_name])
    x = np.asarray(cached_embedder(CONFIG).embed(pool.queries), dtype=np.float64)
    feats = np.array([text_features(q) for q in pool.queries])
    return Data(pool, len(train), x, feats, quality[:, 0] - quality[:, 1], quality[:, 0], quality[:, 1],
                np.asarray(pool.call_costs(small_name), dtype=np.float64),
                np.asarray(pool.call_costs(large_name), dtype=np.float64),
                np.array([e.task_name or "" for e in pool.examples]))


# --- model families (fit on rows, return a scorer) -------------------------------------------------
def inputs(data: Data, with_feats: bool) -> np.ndarray:
    return np.hstack([data.x, data.feats]) if with_feats else data.x


def domain_weights(tasks: np.ndarray, power: float) -> np.ndarray:
    """Per-query weights ~ 1 / domain size ** power, mean 1 (power 0: uniform)."""
    _, inverse, counts = np.unique(tasks, return_inverse=True, return_counts=True)
    w = 1.0 / counts[inverse] ** power
    return w / w.mean()


def fit_hybrid_mlp(x: np.ndarray, gap: np.ndarray, seed: int, mode: str = "deterministic", tau: float = 0.1,
                   hidden: tuple[int, ...] = (64,), alpha: float = 10.0, max_iter: int = 30,
                   lr: float = 1e-3) -> Scorer:
    labels, _ = make_labels(gap, mode, tau)  # type: ignore[arg-type]
    mlp, _ = fit_mlp(x, labels, hidden, "relu", "adam", max_iter, alpha, lr, False, seed)
    return lambda z: squash_scores(mlp.predict(z))


def fit_ridge(x: np.ndarray, target: np.ndarray, alpha: float, weights: np.ndarray | None = None) -> Scorer:
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale[scale < 1e-8] = 1.0
    z = (x - mean) / scale
    w = np.ones(len(z)) if weights is None else weights
    y_mean = float(np.average(target, weights=w))
    zw = z * w[:, None]
    coef = np.linalg.solve(z.T @ zw + alpha * np.eye(z.shape[1]), zw.T @ (target - y_mean))
    return lambda q: ((q - mean) / scale) @ coef + y_mean


def fit_logistic(x: np.ndarray, y: np.ndarray, c: float) -> Scorer:
    from sklearn.linear_model import LogisticRegression

    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale[scale < 1e-8] = 1.0
    model = LogisticRegression(C=c, max_iter=500).fit((x - mean) / scale, y)
    return lambda q: model.decision_function((q - mean) / scale)


def cdf_scorer(scorer: Scorer, train_x: np.ndarray) -> Scorer:
    """The scorer's training-score empirical CDF applied to its scores: a label-free common scale."""
    ref = np.sort(scorer(train_x))
    return lambda q: np.searchsorted(ref, scorer(q), side="right") / len(ref)


def mean_of(scorers: Sequence[Scorer]) -> Scorer:
    return lambda q: np.mean([s(q) for s in scorers], axis=0)


# --- variants --------------------------------------------------------------------------------------
#: (data, training row indices, seed) -> scorer of the *whole* feature matrix's rows
Fitter = Callable[[Data, np.ndarray, int], Callable[[np.ndarray], np.ndarray]]


def hybrid_variant(with_feats: bool = False, bag: int = 1, mode: str = "deterministic", tau: float = 0.1,
                   power: float = 0.0, target: str = "label", **mlp: object) -> Fitter:
    def fitter(d: Data, idx: np.ndarray, seed: int) -> Callable[[np.ndarray], np.ndarray]:
        x = inputs(d, with_feats)
        params = {**SHIPPED_MLP, **mlp}
        if power:
            # domain-balanced: resample rows with probability ~ domain weight (MLPRegressor has no weights)
            rng = np.random.default_rng(seed)
            p = domain_weights(d.tasks[idx], power)
            picks = [rng.choice(idx, size=len(idx), p=p / p.sum()) for _ in range(bag)]
        else:
            picks = [idx] * bag
        # target "small_right": regress 1[small model correct] (its "gap" is small - 1: >= 0 iff right)
        signal = d.gap if target == "label" else d.small - 1.0
        scorers = [fit_hybrid_mlp(x[rows], signal[rows], seed + b, mode, tau, **params)  # type: ignore[arg-type]
                   for b, rows in enumerate(picks)]
        scorer = mean_of(scorers)
        return lambda rows: scorer(x[rows])
    return fitter


def ridge_variant(alpha: float, target: str = "gap", with_feats: bool = False, power: float = 0.0) -> Fitter:
    def fitter(d: Data, idx: np.ndarray, seed: int) -> Callable[[np.ndarray], np.ndarray]:
        x = inputs(d, with_feats)
        y = d.gap[idx] if target == "gap" else (d.gap[idx] >= 0).astype(float)
        scorer = fit_ridge(x[idx], y, alpha, domain_weights(d.tasks[idx], power) if power else None)
        return lambda rows: scorer(x[rows])
    return fitter


def logistic_variant(c: float, with_feats: bool = False, target: str = "label") -> Fitter:
    def fitter(d: Data, idx: np.ndarray, seed: int) -> Callable[[np.ndarray], np.ndarray]:
        x = inputs(d, with_feats)
        y = d.gap[idx] >= 0 if target == "label" else d.small[idx] > 0.5
        scorer = fit_logistic(x[idx], y.astype(int), c)
        return lambda rows: scorer(x[rows])
    return fitter


def mf_variant(with_feats: bool = False) -> Fitter:
    from routers.mf.model import MFTraining, battle_targets, fit_mf

    def fitter(d: Data, idx: np.ndarray, seed: int) -> Callable[[np.ndarray], np.ndarray]:
        x = inputs(d, with_feats)
        targets, weights = battle_targets(d.gap[idx], 1.0)
        weights_mf = fit_mf(x[idx], targets, weights, MFTraining(128, 50, 64, 3e-4, 1e-5, 0.1, True, seed))
        return lambda rows: weights_mf.scores(x[rows])
    return fitter


def ensemble_variant(parts: Sequence[Fitter], weights: Sequence[float] | None = None) -> Fitter:
    """Weighted mean of the parts' scores, each mapped through its own training-score CDF."""
    w = np.full(len(parts), 1.0 / len(parts)) if weights is None else np.asarray(weights, dtype=float)

    def fitter(d: Data, idx: np.ndarray, seed: int) -> Callable[[np.ndarray], np.ndarray]:
        fitted = [part(d, idx, seed) for part in parts]
        refs = [np.sort(f(idx)) for f in fitted]
        return lambda rows: np.sum([wk * np.searchsorted(r, f(rows), side="right") / len(r)
                                    for wk, f, r in zip(w, fitted, refs)], axis=0)
    return fitter


def blend_inner(parts: Sequence[Fitter], blend_weights: Sequence[float], inner_folds: int = 3) -> Fitter:
    """Two parts, CDF-blended with weight w on the first; w chosen by inner group folds of the training
    rows (each part fitted once per inner fold, every w scored on the same out-of-fold scores)."""
    def fitter(d: Data, idx: np.ndarray, seed: int) -> Callable[[np.ndarray], np.ndarray]:
        folds = group_folds(d.pool.subset(idx.tolist()), inner_folds, INNER_SEED[0])
        rows_out, ranks = [], []
        for fold in folds:
            fit_rows, eval_rows = idx[list(fold.fit_indices)], idx[list(fold.eval_indices)]
            rows_out.append(eval_rows)
            fold_ranks = []
            for part in parts:
                f = part(d, fit_rows, seed)
                ref = np.sort(f(fit_rows))
                fold_ranks.append(np.searchsorted(ref, f(eval_rows), side="right") / len(ref))
            ranks.append(fold_ranks)
        rows_all = np.concatenate(rows_out)
        first = np.concatenate([r[0] for r in ranks])
        second = np.concatenate([r[1] for r in ranks])
        scores = [apgr_of(d, rows_all, w * first + (1 - w) * second) for w in blend_weights]
        best = float(blend_weights[int(np.argmax(scores))])
        CHOICES.append(best)
        return ensemble_variant(parts, [best, 1 - best])(d, idx, seed)
    return fitter


def router_blend() -> Fitter:
    """``routers.blend``'s fit: its heads, CDF scales and inner leave-domains-out choice of the weight."""
    from routers.blend.model import choose_blend_weight, fit_heads

    def fitter(d: Data, idx: np.ndarray, seed: int) -> Callable[[np.ndarray], np.ndarray]:
        train = d.pool.subset(idx.tolist())
        weight, _ = choose_blend_weight(train, d.x[idx], d.small[idx], d.large[idx], list(BLEND_GRID), 3,
                                        1e-3, 0.5, seed + 1)
        CHOICES.append(weight)
        weights = fit_heads(d.x[idx], d.small[idx], d.large[idx], 1e-3, 0.5, seed, weight).as_stored()
        return lambda rows: weights.scores(d.x[rows])
    return fitter


# --- evaluation ------------------------------------------------------------------------------------
def predictions(data: Data, rows: np.ndarray, scores: np.ndarray) -> Predictions:
    return Predictions(scores, scores < np.median(scores), data.small[rows], data.large[rows],
                       data.cost_small[rows], data.cost_large[rows], np.zeros(len(rows)), False, data.tasks[rows])


def apgr_of(data: Data, rows: np.ndarray, scores: np.ndarray) -> float:
    return float(curve_metrics(predictions(data, rows, scores))["apgr"])  # type: ignore[arg-type]


def out_of_fold(data: Data, fitter: Fitter, rows: np.ndarray, n_folds: int, seed: int,
                fit_seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Pooled out-of-fold scores over group folds of ``rows``' domains (rows, scores)."""
    folds = group_folds(data.pool.subset(rows.tolist()), n_folds, seed)
    out_rows, out_scores = [], []
    for fold in folds:
        fit_rows, eval_rows = rows[list(fold.fit_indices)], rows[list(fold.eval_indices)]
        out_rows.append(eval_rows)
        out_scores.append(fitter(data, fit_rows, fit_seed)(eval_rows))
    return np.concatenate(out_rows), np.concatenate(out_scores)


def inner_choice(grid: Sequence[Fitter], inner_folds: int = 3) -> Fitter:
    """Choose the grid point inside each fit: best pooled inner-group-fold APGR of the training rows."""
    def fitter(d: Data, idx: np.ndarray, seed: int) -> Callable[[np.ndarray], np.ndarray]:
        inner_seed = INNER_SEED[0]
        scores = [apgr_of(d, *out_of_fold(d, point, idx, inner_folds, inner_seed, seed)) for point in grid]
        CHOICES.append(int(np.argmax(scores)))
        return grid[int(np.argmax(scores))](d, idx, seed)
    return fitter


#: the inner seed of the outer fold being fitted (select_params: seed + 1 + fold index); the choices made
INNER_SEED = [1]
CHOICES: list[int] = []


def seen_scores(data: Data, fitter: Fitter) -> tuple[np.ndarray, np.ndarray]:
    train, test = np.arange(data.n_train), np.arange(data.n_train, len(data.gap))
    INNER_SEED[0] = 1  # in_domain: select_params(..., protocol.seed + 1)
    return test, fitter(data, train, 0)(test)


def unseen_scores(data: Data, fitter: Fitter, n_folds: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rows_all = np.arange(len(data.gap))
    out_rows, out_scores = [], []
    for fold in group_folds(data.pool, n_folds, seed):
        INNER_SEED[0] = seed + 1 + fold.index
        fit_rows, eval_rows = rows_all[list(fold.fit_indices)], rows_all[list(fold.eval_indices)]
        out_rows.append(eval_rows)
        out_scores.append(fitter(data, fit_rows, 0)(eval_rows))
    return np.concatenate(out_rows), np.concatenate(out_scores)


def interval(data: Data, rows: np.ndarray, scores: np.ndarray, n_resamples: int) -> str:
    preds = predictions(data, rows, scores)
    point = apgr_of(data, rows, scores)
    if n_resamples <= 0:
        return f"{point:.3f}"
    boot = bootstrap_metrics(preds, Predictions.take, lambda s: {"apgr": curve_metrics(s)["apgr"]},
                             len(preds), n_resamples, 0, 0.95)["apgr"]
    return f"{point:.3f} [{boot.low:.3f}, {boot.high:.3f}]"


def paired_bootstrap(data: Data, rows: np.ndarray, scores_a: np.ndarray, scores_b: np.ndarray,
                     n_resamples: int) -> str:
    """APGR of scores ``a`` minus ``b`` on the same queries ``rows``, with a paired percentile bootstrap (the
    same resampled queries for both)."""
    apgr_a, apgr_b = apgr_of(data, rows, scores_a), apgr_of(data, rows, scores_b)
    rng = np.random.default_rng(0)
    deltas = []
    for _ in range(n_resamples):
        pick = rng.integers(0, len(rows), len(rows))
        deltas.append(apgr_of(data, rows[pick], scores_a[pick]) - apgr_of(data, rows[pick], scores_b[pick]))
    low, high = np.percentile(deltas, [2.5, 97.5])
    share = float(np.mean(np.asarray(deltas) > 0))
    return (f"{apgr_a:.3f} - {apgr_b:.3f} = {apgr_a - apgr_b:+.3f} [{low:+.3f}, {high:+.3f}] "
            f"(resamples with a > b: {share:.1%})")


def paired_difference(data: Data, a: Fitter, b: Fitter, n_resamples: int, fold_seed: int,
                      n_folds: int) -> str:
    """Unseen APGR of ``a`` minus ``b`` on the same out-of-fold queries (``paired_bootstrap``)."""
    rows_a, scores_a = unseen_scores(data, a, n_folds, fold_seed)
    rows_b, scores_b = unseen_scores(data, b, n_folds, fold_seed)
    assert np.array_equal(rows_a, rows_b)
    return paired_bootstrap(data, rows_a, scores_a, scores_b, n_resamples)


# --- the variants looked at ------------------------------------------------------------------------
def variants() -> dict[str, tuple[str, Fitter]]:
    hyb_grid = [hybrid_variant(hidden=h, alpha=a) for h in ((16,), (64,)) for a in (1.0, 10.0)]
    return {
        # references
        "hybrid_shipped": ("fixed (shipped config)", hybrid_variant()),
        "hybrid_tuned4": ("inner (bench --tune grid)", inner_choice(hyb_grid)),
        "mf_default": ("fixed (shipped config)", mf_variant()),
        # linear models on embeddings
        "ridge_gap_a1e3": ("fixed", ridge_variant(1e3)),
        "ridge_gap_a1e4": ("fixed", ridge_variant(1e4)),
        "ridge_gap_inner": ("inner (alpha 1e2..1e5)", inner_choice([ridge_variant(a) for a in (1e2, 1e3, 1e4, 1e5)])),
        "ridge_lab_a1e4": ("fixed", ridge_variant(1e4, target="label")),
        "logistic_c1e-3": ("fixed", logistic_variant(1e-3)),
        # cheap text features
        "ridge_gap_feat_a1e4": ("fixed", ridge_variant(1e4, with_feats=True)),
        "hybrid_feat": ("fixed", hybrid_variant(with_feats=True)),
        # label modes (with 0/1 quality, transformed == deterministic)
        "hybrid_prob_tau1": ("fixed", hybrid_variant(mode="probabilistic", tau=1.0)),
        # domain balance
        "ridge_gap_bal05_a1e4": ("fixed", ridge_variant(1e4, power=0.5)),
        "hybrid_bal05": ("fixed", hybrid_variant(power=0.5)),
        # bagging / ensembles
        "hybrid_bag5": ("fixed", hybrid_variant(bag=5)),
        "hybrid_bag5_feat": ("fixed", hybrid_variant(with_feats=True, bag=5)),
        "ens_hybrid_ridge": ("fixed", ensemble_variant([hybrid_variant(), ridge_variant(1e4)])),
        # round 2: the label 1[gap >= 0] transfers, the gap does not; linear logistic on it
        **{f"logistic_c{c:g}": ("fixed", logistic_variant(c)) for c in (1e-4, 3e-4, 3e-3, 1e-2)},
        "logistic_inner": ("inner (C 1e-4..1e-2)", inner_choice([logistic_variant(c) for c in (1e-4, 1e-3, 1e-2)])),
        "logistic_feat_c1e-3": ("fixed", logistic_variant(1e-3, with_feats=True)),
        "logistic_small_right": ("fixed", logistic_variant(1e-3, target="small_right")),
        "ens_hybrid_logistic": ("fixed", ensemble_variant([hybrid_variant(), logistic_variant(1e-3)])),
        "ens_hybrid_mf": ("fixed", ensemble_variant([hybrid_variant(), mf_variant()])),
        "ens_hf_lf": ("fixed", ensemble_variant([hybrid_variant(with_feats=True),
                                                 logistic_variant(1e-3, with_feats=True)])),
        # round 3: the small model's own correctness, P(small right), transfers best
        **{f"logistic_small_right_c{c:g}": ("fixed", logistic_variant(c, target="small_right"))
           for c in (1e-4, 3e-4, 3e-3, 1e-2)},
        "hybrid_small_right": ("fixed", hybrid_variant(target="small_right")),
        **{f"blend_lr_w{w:g}": ("fixed", ensemble_variant(
            [logistic_variant(1e-3, target="small_right"), logistic_variant(1e-3)], [w, 1 - w]))
           for w in (0.25, 0.5, 0.75)},
        "blend_lr_inner": ("inner (w 0..1 step .25)", blend_inner(
            [logistic_variant(1e-3, target="small_right"), logistic_variant(1e-3)], BLEND_GRID)),
        "blend_hyb_inner": ("inner (w 0..1 step .25)", blend_inner(
            [hybrid_variant(target="small_right"), hybrid_variant()], BLEND_GRID)),
        # would the inner folds alone have found the small_right target? choose the family inside train
        "family_inner": ("inner (5 families)", inner_choice([
            hybrid_variant(), ridge_variant(1e4), logistic_variant(1e-3),
            logistic_variant(1e-3, target="small_right"), hybrid_variant(target="small_right")])),
        # the procedure shipped as routers/blend (BlendRouter.fit on these arrays; inner seed 1 as its seed + 1)
        "router_blend": ("inner (w 0..1 step .25)", router_blend()),
    }


BLEND_GRID = (0.0, 0.25, 0.5, 0.75, 1.0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", help="comma-separated variant names")
    parser.add_argument("--bootstrap", type=int, default=0, help="resamples per interval (0: points only)")
    parser.add_argument("--no-seen", action="store_true", help="skip the seen (train -> test) figure")
    parser.add_argument("--fold-seed", type=int, default=0,
                        help="seed of the outer domain folds (0: bench/generalisation.py's; others: a fresh check)")
    parser.add_argument("--folds", type=int, default=5, help="outer domain folds")
    parser.add_argument("--paired", help="A,B: unseen APGR of A minus B with a paired bootstrap")
    args = parser.parse_args(argv)
    data = load_data()
    table = variants()
    if args.paired:
        a, b = args.paired.split(",")
        with threadpool_limits(limits=1):
            delta = paired_difference(data, table[a][1], table[b][1], args.bootstrap or 1000, args.fold_seed,
                                      args.folds)
        print(f"unseen APGR {a} - {b} ({args.folds} folds, fold seed {args.fold_seed}): {delta}")
        return 0
    names = args.only.split(",") if args.only else list(table)
    print(f"{len(table)} variants defined; running {len(names)}", flush=True)
    print(f"{'variant':28s} {'how chosen':28s} {'seen APGR':22s} {'unseen APGR':22s} secs", flush=True)
    for name in names:
        how, fitter = table[name]
        started = time.time()
        CHOICES.clear()
        with threadpool_limits(limits=1):
            seen = "-" if args.no_seen else interval(data, *seen_scores(data, fitter), args.bootstrap)
            unseen = interval(data, *unseen_scores(data, fitter, args.folds, args.fold_seed), args.bootstrap)
        chosen = f" choices={CHOICES}" if CHOICES else ""
        print(f"{name:28s} {how:28s} {seen:22s} {unseen:22s} {time.time() - started:.0f}{chosen}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
