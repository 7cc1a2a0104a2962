"""PNG plots of routers' cost-quality curves.

One drawing routine, ``draw_share_panel``: quality against the share of queries sent to the large model,
one line per router, with the small-only / large-only / oracle levels and the random-mix diagonal. Two
figures use it: ``plot_curves`` (one split, with a quality-vs-cost panel beside it) and
``plot_generalisation`` (seen vs unseen domains, one panel per evaluation mode present, legends with
bootstrap intervals).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: servers and CI have no display
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from PIL import Image

from routers.evaluation.generalisation import GeneralisationResult
from routers.evaluation.metrics import Curve, Report

DPI = 150
#: points drawn per curve: a pooled curve has one per query (12k), far more than a panel's pixels, and
#: every one of them would be stored in the PNG's path data
MAX_DRAWN_POINTS = 1500
#: panel titles, in the order the panels are drawn left to right (modes absent from the results: no panel)
PANEL_TITLES = {"in_domain": "seen domains (test split)",
                "in_domain_folds": "seen domains (pooled, {folds} random folds)",
                "leave_domains_out": "unseen domains (leave-domains-out, {folds} folds)"}


@dataclass(frozen=True)
class Levels:
    """Reference qualities of one query set."""

    small: float
    large: float
    oracle: float


@dataclass(frozen=True)
class ShareLine:
    """One router's curve in a share panel; ``point`` marks its operating point (share, quality)."""

    label: str
    curve: Curve
    point: tuple[float, float] | None = None


def thinned(curve: Curve, max_points: int = MAX_DRAWN_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """(share, quality) at most ``max_points`` evenly spaced points, both ends kept."""
    n = len(curve.large_share)
    if n <= max_points:
        return curve.large_share, curve.quality
    keep = np.unique(np.linspace(0, n - 1, max_points).round().astype(int))
    return curve.large_share[keep], curve.quality[keep]


def draw_levels(ax: Axes, levels: Levels, diagonal: bool) -> None:
    """Reference lines, named by text on the line rather than in the legend, which then lists routers only.
    The texts sit where curves rarely run: below small-only at the left end, and mid-way between the
    large-only and oracle levels."""
    ax.axhline(levels.small, color="tab:grey", linestyle="--", linewidth=1.0)
    ax.axhline(levels.large, color="black", linestyle="--", linewidth=1.0)
    ax.axhline(levels.oracle, color="tab:grey", linestyle=":", linewidth=1.0)
    text = {"fontsize": 8, "transform": ax.get_yaxis_transform()}  # x in axes fraction, y in data
    ax.text(0.01, levels.small, f"small model only {levels.small:.3f}", ha="left", va="top", **text)
    ax.text(0.5, levels.large, f"large model only {levels.large:.3f}", ha="center", va="bottom", **text)
    if levels.oracle - levels.large > 0.05 * abs(levels.large - levels.small):  # else the texts overlap
        ax.text(0.5, levels.oracle, f"oracle bound {levels.oracle:.3f}", ha="center", va="top",
                color="tab:grey", **text)
    if diagonal:
        ax.plot([0, 1], [levels.small, levels.large], color="black", linestyle="-.", linewidth=0.9,
                label="random mix")


def draw_share_panel(ax: Axes, lines: Sequence[ShareLine], levels: Levels, title: str = "",
                     diagonal: bool = True, legend_below: bool = False) -> list[str]:
    """Quality vs share of queries sent to the large model; returns each line's colour, in order.
    ``diagonal`` False when one of ``lines`` is the random router's (already the diagonal);
    ``legend_below`` puts the legend under the axes, clear of curves that fill the lower right."""
    colours = []
    for line in lines:
        share, quality = thinned(line.curve)
        (drawn,) = ax.plot(share, quality, label=line.label, linewidth=1.6)
        colours.append(drawn.get_color())
        if line.point is not None:
            ax.scatter([line.point[0]], [line.point[1]], color=drawn.get_color(), zorder=5, s=28)
    draw_levels(ax, levels, diagonal)
    spread = max(levels.oracle, levels.large) - min(levels.small, levels.large)
    ax.set_ylim(min(levels.small, levels.large) - 0.08 * spread, max(levels.oracle, levels.large) + 0.05 * spread)
    ax.set_xlim(0, 1)
    ax.set_xlabel("share of queries sent to the large model")
    ax.set_ylabel("mean quality")
    ax.set_title(title, fontsize=11)
    ax.grid(alpha=0.3)
    # Monospace: the router names and figures line up in columns.
    font = {"family": "monospace", "size": 8.5}
    if legend_below:
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), prop=font, frameon=False)
    else:
        ax.legend(loc="lower right", prop=font, framealpha=0.9)
    return colours


def save(fig: Figure, path: str | Path) -> Path:
    """A 256-colour PNG: a third of the RGBA file's size (the repo commits some) and no visible change,
    the figure's few line colours and their anti-aliasing fitting in the palette."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    plt.close(fig)
    buffer.seek(0)
    with Image.open(buffer) as image:
        palette = image.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
        palette.save(path, format="PNG", optimize=True, dpi=(DPI, DPI))
    return path


# --- one split: share and cost panels ----------------------------------------------------------------
def plot_curves(results: Sequence[tuple[Report, Curve]], path: str | Path, title: str = "") -> Path:
    """Left: quality vs share of calls to the large model. Right: quality vs mean cost per query."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8))
    first = results[0][0]
    lines = [ShareLine(f"{report.router} (APGR {report.apgr:.3f})", curve, (report.large_share, report.quality))
             for report, curve in results]
    colours = draw_share_panel(left, lines, Levels(first.quality_small, first.quality_large,
                                                   first.quality_oracle))
    for (report, curve), colour in zip(results, colours):
        right.plot(curve.cost * 1000, curve.quality, color=colour, linewidth=1.6, label=report.router)
        right.scatter([report.cost * 1000], [report.quality], color=colour, zorder=5, s=28)
    right.set_xlabel("mean cost per 1k queries")
    right.set_ylabel("mean quality")
    right.grid(alpha=0.3)
    right.legend(fontsize=8, loc="lower right")
    fig.suptitle(title or f"cost-quality curves on {first.n_test} test queries (dots: each router's threshold)")
    return save(fig, path)


# --- seen vs unseen domains ----------------------------------------------------------------------------
def interval_label(result: GeneralisationResult, width: int) -> str:
    """``hybrid_llm  APGR 0.571 [0.554, 0.588]``; the random router's APGR is exact, not estimated."""
    apgr = result.metrics["apgr"]
    if result.expectation:
        return f"{result.router:<{width}}  APGR {apgr.value:.3f} (expectation)"
    if apgr.low is None or apgr.high is None:
        return f"{result.router:<{width}}  APGR {apgr.value:.3f}"
    return f"{result.router:<{width}}  APGR {apgr.value:.3f} [{apgr.low:.3f}, {apgr.high:.3f}]"


def panel_title(results: Sequence[GeneralisationResult]) -> str:
    first = results[0]
    return f"{PANEL_TITLES[first.mode].format(folds=first.n_folds)}: {first.n_queries} queries"


def generalisation_panels(results: Sequence[GeneralisationResult]) -> list[list[GeneralisationResult]]:
    """The results grouped by mode (``PANEL_TITLES`` order: test split, pooled in-domain folds, unseen), one
    panel each."""
    order = [mode for mode in PANEL_TITLES if any(r.mode == mode for r in results)]
    return [[r for r in results if r.mode == mode] for mode in order]


def draw_generalisation_panel(ax: Axes, results: Sequence[GeneralisationResult]) -> None:
    if any(r.curve is None for r in results):
        raise ValueError("results without a curve (built before curves were kept?) cannot be plotted")
    width = max(len(r.router) for r in results)
    lines = [ShareLine(interval_label(r, width), r.curve) for r in results if r.curve is not None]
    first = results[0]
    draw_share_panel(ax, lines, Levels(first.quality_small, first.quality_large, first.quality_oracle),
                     panel_title(results), diagonal=not any(r.expectation for r in results), legend_below=True)


def plot_generalisation(results: Sequence[GeneralisationResult], path: str | Path, title: str = "") -> Path:
    """One panel per mode present in ``results`` (seen domains: test split and/or pooled folds; unseen
    domains), side by side."""
    panels = generalisation_panels(results)
    if not panels:
        raise ValueError("no results to plot")
    fig, axes = plt.subplots(1, len(panels), figsize=(7 * len(panels), 6.6), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        draw_generalisation_panel(ax, panel)
    first = results[0]
    # One panel is too narrow for the title on one line.
    separator = "; " if len(panels) > 1 else "\n"
    fig.suptitle(title or f"cost-quality curves of pooled predictions{separator}APGR with {first.confidence:.0%} "
                 f"bootstrap interval ({first.n_resamples} resamples)", fontsize=12)
    return save(fig, path)
