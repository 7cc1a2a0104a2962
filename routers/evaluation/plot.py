"""PNG plot of several routers' cost-quality curves side by side."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: servers and CI have no display
import matplotlib.pyplot as plt

from routers.evaluation.metrics import Curve, Report


def plot_curves(results: Sequence[tuple[Report, Curve]], path: str | Path, title: str = "") -> Path:
    """Left: quality vs share of calls to the large model. Right: quality vs mean cost per query."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8))
    first = results[0][0]
    for report, curve in results:
        label = f"{report.router} (APGR {report.apgr:.3f})"
        (line,) = left.plot(curve.large_share, curve.quality, label=label, linewidth=1.6)
        right.plot(curve.cost * 1000, curve.quality, color=line.get_color(), linewidth=1.6, label=report.router)
        left.scatter([report.large_share], [report.quality], color=line.get_color(), zorder=5, s=28)
        right.scatter([report.cost * 1000], [report.quality], color=line.get_color(), zorder=5, s=28)
    left.plot([0, 1], [first.quality_small, first.quality_large], "k--", linewidth=0.9, label="random mix")
    left.axhline(first.quality_oracle, color="grey", linestyle=":", linewidth=0.9, label="oracle")
    left.set_xlabel("share of queries sent to the large model")
    left.set_ylabel("mean quality")
    left.set_xlim(0, 1)
    left.legend(fontsize=8, loc="lower right")
    left.grid(alpha=0.3)
    right.set_xlabel("mean cost per 1k queries")
    right.set_ylabel("mean quality")
    right.grid(alpha=0.3)
    right.legend(fontsize=8, loc="lower right")
    fig.suptitle(title or f"cost-quality curves on {first.n_test} test queries (dots: each router's threshold)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
