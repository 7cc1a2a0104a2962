"""The domain-prior router's model: which domain a query is from, how each domain's queries fared, and a
ridge on the gap, blended on their training CDFs.

On traffic from the domains it was trained on, *which domain a query comes from* is most of what a
router can know about the small-vs-large gap: on the shared data the per-domain mean gap, looked up with
the true task_name, already scores APGR 0.680 in 5-fold CV inside train, where Hybrid's MLP scores
0.633 (``bench/indomain_search.py``). The training data names the domain of each query
(``task_name``), a label the embedding routers never use; this model learns from it:

* ``domain_logits``: a multinomial L2 logistic regression on the standardised embedding, P(domain | q);
* ``domain_rate``: each domain's mean gap ``q_small - q_large``, shrunk towards the global mean by
  ``prior_strength`` pseudo-queries; refined by up to ``sub_clusters`` k-means topics inside each domain
  (unit-norm embeddings, each topic's mean gap shrunk towards its domain's); a query takes, in each
  domain, the rate of its nearest topic there;
* ``prior``: sum over domains of P(domain | q) x that rate: the expected gap given what the query is about;
* ``ridge``: a ridge regression of the gap on the standardised embedding (within-domain signal the
  prior cannot see; ``alpha`` 1e4, the ridge_gap_a1e4 row of the search log);
* the score: ``w * F_prior + (1 - w) * F_ridge``, each on its training CDF (``routers.blend.HeadScale``),
  higher = the small model is more suitable. ``w`` is chosen inside ``fit`` by random folds stratified
  by domain (``query_folds``): this router is for traffic from known domains, so its one choice is tuned
  for that.

What it cannot do: a domain it never saw has no rate of its own; its queries get a mixture of the rates
of the domains they resemble, which is no better than a coin flip (bench/README.md: unseen-domain APGR
0.510). For new domains use ``blend``. Everything is numpy at inference; scikit-learn only fits.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from routers.blend.model import best_weight, fit_part_scales, mix_parts, part_cdfs
from routers.embedding import standardisation, unit_rows
from routers.errors import ArtifactError
from routers.safe_io import load_arrays, save_arrays

PARTS = ("prior", "ridge")
TENSORS = ("mean", "scale", "domain_coef", "domain_intercept", "domain_rate", "centroids", "centroid_domain",
           "centroid_rate", "ridge_coef", "ridge_intercept", "quantiles")


@dataclass(frozen=True)
class PriorSettings:
    """The fixed (untuned) settings of one fit."""

    c: float = 0.1
    prior_strength: float = 20.0
    sub_clusters: int = 8
    min_topic_queries: int = 50
    ridge_alpha: float = 1e4
    seed: int = 0


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=1, keepdims=True)


@dataclass
class DomainPriorWeights:
    """Everything the score needs, as float64 arrays (``TENSORS``) plus the blend weight and domain names."""

    mean: np.ndarray  # (dim,)
    scale: np.ndarray  # (dim,)
    domain_coef: np.ndarray  # (n_domains, dim); all zero with one domain
    domain_intercept: np.ndarray  # (n_domains,)
    domain_rate: np.ndarray  # (n_domains,) shrunk mean gap per domain
    centroids: np.ndarray  # (n_topics, dim) unit-norm topic centres
    centroid_domain: np.ndarray  # (n_topics,) the domain index of each topic
    centroid_rate: np.ndarray  # (n_topics,) shrunk mean gap per topic
    ridge_coef: np.ndarray  # (dim,)
    ridge_intercept: np.ndarray  # (1,)
    quantiles: np.ndarray  # (2, n_quantiles), rows in PARTS order
    blend_weight: float
    domains: list[str]

    @property
    def embedding_dim(self) -> int:
        return int(self.mean.shape[0])

    def standardised(self, embeddings: np.ndarray) -> np.ndarray:
        return (np.asarray(embeddings, dtype=np.float64) - self.mean) / self.scale

    def domain_probabilities(self, embeddings: np.ndarray) -> np.ndarray:
        """(n, n_domains) P(domain | query)."""
        return softmax(self.standardised(embeddings) @ self.domain_coef.T + self.domain_intercept)

    def topic_rates(self, embeddings: np.ndarray) -> np.ndarray:
        """(n, n_domains): in each domain, the rate of the query's nearest topic (the domain's own rate
        where it has no topics)."""
        n = len(embeddings)
        rates = np.tile(self.domain_rate, (n, 1))
        if len(self.centroids) == 0:
            return rates
        similarity = unit_rows(embeddings, np.float64) @ self.centroids.T
        for d in np.unique(self.centroid_domain).astype(int):
            topics = np.nonzero(self.centroid_domain == d)[0]
            nearest = topics[np.argmax(similarity[:, topics], axis=1)]
            rates[:, d] = self.centroid_rate[nearest]
        return rates

    def part_values(self, embeddings: np.ndarray) -> np.ndarray:
        """(n, 2): the prior (expected gap given the domain mixture) and the ridge's predicted gap."""
        prior = np.sum(self.domain_probabilities(embeddings) * self.topic_rates(embeddings), axis=1)
        ridge = self.standardised(embeddings) @ self.ridge_coef + float(self.ridge_intercept[0])
        return np.stack([prior, ridge], axis=1)

    def part_scores(self, embeddings: np.ndarray) -> np.ndarray:
        """(n, 2): each part on its training CDF."""
        return part_cdfs(self.part_values(embeddings), self.quantiles)

    def scores(self, embeddings: np.ndarray) -> np.ndarray:
        return mix_parts(self.part_scores(embeddings), self.blend_weight)

    def top_domain(self, embedding: np.ndarray) -> tuple[str, float]:
        """The most probable training domain of one query and its probability."""
        p = self.domain_probabilities(np.asarray(embedding).reshape(1, -1))[0]
        k = int(np.argmax(p))
        return self.domains[k], float(p[k])

    def as_stored(self) -> DomainPriorWeights:
        """Rounded to the float32 the artifact keeps, so a loaded router scores as the fitted one."""
        arrays = [np.asarray(getattr(self, name), dtype=np.float32).astype(np.float64) for name in TENSORS]
        return DomainPriorWeights(*arrays, blend_weight=self.blend_weight, domains=list(self.domains))

    def save(self, path: Path) -> None:
        save_arrays(path, {name: np.asarray(getattr(self, name), dtype=np.float32) for name in TENSORS})

    @classmethod
    def load(cls, path: Path, blend_weight: float, domains: Sequence[str]) -> DomainPriorWeights:
        stored = load_arrays(path)
        missing = [name for name in TENSORS if name not in stored]
        if missing:
            raise ArtifactError(f"{path}: missing tensors {missing}")
        weights = cls(*(stored[name].astype(np.float64) for name in TENSORS), blend_weight=blend_weight,
                      domains=list(domains))
        weights.check_shapes(path)
        return weights

    def check_shapes(self, path: Path) -> None:
        dim, n_domains, n_topics = self.embedding_dim, len(self.domains), len(self.centroid_rate)
        expected = {"scale": (dim,), "domain_coef": (n_domains, dim), "domain_intercept": (n_domains,),
                    "domain_rate": (n_domains,), "centroids": (n_topics, dim), "centroid_domain": (n_topics,),
                    "ridge_coef": (dim,), "ridge_intercept": (1,)}
        wrong = [name for name, shape in expected.items() if getattr(self, name).shape != shape]
        if wrong or self.quantiles.ndim != 2 or self.quantiles.shape[0] != len(PARTS):
            raise ArtifactError(f"{path}: tensor shapes do not fit together ({wrong or ['quantiles']}; "
                                f"{dim}-d, {n_domains} domains, {n_topics} topics)")
        if n_topics and (self.centroid_domain.min() < 0 or self.centroid_domain.max() >= n_domains):
            raise ArtifactError(f"{path}: a topic names a domain index outside 0..{n_domains - 1}")


# --- fitting ---------------------------------------------------------------------------------------
def fit_domain_classifier(z: np.ndarray, domain_index: np.ndarray, n_domains: int,
                          settings: PriorSettings) -> tuple[np.ndarray, np.ndarray]:
    """(coef, intercept) of P(domain | q); with one domain, the constant 1 (zero weights)."""
    if n_domains < 2:
        return np.zeros((1, z.shape[1])), np.zeros(1)
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=settings.c, max_iter=300, random_state=settings.seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(z, domain_index)
    coef, intercept = model.coef_.astype(np.float64), model.intercept_.astype(np.float64)
    if n_domains == 2:  # scikit-learn keeps one row for two classes: softmax([0, z]) is its sigmoid(z)
        coef, intercept = np.vstack([np.zeros_like(coef), coef]), np.concatenate([[0.0], intercept])
    return coef, intercept


def shrunk_mean(values: np.ndarray, towards: float, strength: float) -> float:
    return float((values.sum() + strength * towards) / (len(values) + strength))


def fit_topics(x_unit: np.ndarray, gap: np.ndarray, domain_rate: float, settings: PriorSettings
               ) -> tuple[np.ndarray, np.ndarray]:
    """One domain's k-means topics (unit-norm centres) and their shrunk mean gaps; none when the domain
    is too small to split into topics of ``min_topic_queries``."""
    k = min(settings.sub_clusters, len(x_unit) // settings.min_topic_queries)
    if k < 2:
        return np.zeros((0, x_unit.shape[1])), np.zeros(0)
    from sklearn.cluster import KMeans

    labels = KMeans(k, n_init=2, random_state=settings.seed).fit_predict(x_unit)
    centres = unit_rows(np.stack([x_unit[labels == t].mean(axis=0) for t in range(k)]))
    rates = np.array([shrunk_mean(gap[labels == t], domain_rate, settings.prior_strength) for t in range(k)])
    return centres, rates


def fit_ridge(z: np.ndarray, gap: np.ndarray, alpha: float) -> tuple[np.ndarray, float]:
    intercept = float(gap.mean())
    coef = np.linalg.solve(z.T @ z + alpha * np.eye(z.shape[1]), z.T @ (gap - intercept))
    return coef, intercept


def fit_prior(x: np.ndarray, gap: np.ndarray, domains: Sequence[str], settings: PriorSettings,
              blend_weight: float = 0.5) -> DomainPriorWeights:
    """Every part of the model on (embeddings, gaps, each query's domain name)."""
    x, gap = np.asarray(x, dtype=np.float64), np.asarray(gap, dtype=np.float64)
    names = sorted(set(domains))
    domain_index = np.searchsorted(names, np.asarray(domains))
    mean, scale = standardisation(x)
    z = (x - mean) / scale
    x_unit = unit_rows(x, np.float64)
    overall = float(gap.mean())
    with threadpool_limits(limits=1, user_api="blas"):  # small matmuls: threads cost more than they save
        coef, intercept = fit_domain_classifier(z, domain_index, len(names), settings)
        rates = np.array([shrunk_mean(gap[domain_index == d], overall, settings.prior_strength)
                          for d in range(len(names))])
        topics = [fit_topics(x_unit[domain_index == d], gap[domain_index == d], rates[d], settings)
                  for d in range(len(names))]
        ridge_coef, ridge_intercept = fit_ridge(z, gap, settings.ridge_alpha)
    centroids = np.concatenate([t[0] for t in topics]) if topics else np.zeros((0, x.shape[1]))
    weights = DomainPriorWeights(
        mean, scale, coef, intercept, rates, centroids,
        np.concatenate([np.full(len(t[1]), d, dtype=np.float64) for d, t in enumerate(topics)]),
        np.concatenate([t[1] for t in topics]), ridge_coef, np.array([ridge_intercept]),
        np.zeros((len(PARTS), 2)), blend_weight, names)
    weights.quantiles = fit_part_scales(weights.part_values(x))
    return weights


def choose_prior_weight(x: np.ndarray, gap: np.ndarray, small: np.ndarray, large: np.ndarray,
                        domains: Sequence[str], folds: Sequence[tuple[np.ndarray, np.ndarray]],
                        grid: Sequence[float], settings: PriorSettings) -> tuple[float, list[float]]:
    """The grid's w with the best pooled out-of-fold APGR over ``folds`` ((fit rows, eval rows) of the
    training data; ties: the earlier w), and every w's APGR. Each fold's model is fitted once."""
    domains = np.asarray(domains)
    rows, parts = [], []
    for fit_rows, eval_rows in folds:
        fold_weights = fit_prior(x[fit_rows], gap[fit_rows], list(domains[fit_rows]), settings)
        rows.append(eval_rows)
        parts.append(fold_weights.part_scores(x[eval_rows]))
    order = np.concatenate(rows)
    return best_weight(np.concatenate(parts), small[order], large[order], grid)
