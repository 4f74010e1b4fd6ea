"""Histograms with ratio panels (matplotlib + mplhep HEP style, no LaTeX), one PNG per observable.

Every histogram also yields its separation power, so plots and numbers never disagree.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import mplhep as hep  # noqa: E402
import numpy as np  # noqa: E402

from calofm.evaluate.distances import histogram_edges, separation_power  # noqa: E402

REFERENCE, MODEL = "Geant4", "model"
_STYLE = {**hep.style.ROOT, "text.usetex": False, "font.size": 11, "axes.labelsize": 11}
_GRID_STYLE = {**_STYLE, "xtick.minor.visible": False, "ytick.minor.visible": False}  # 45 panels draw 2x faster


Generated = np.ndarray | dict[str, np.ndarray]  # one model's values, or several models' by label


def _by_label(generated: Generated) -> dict[str, np.ndarray]:
    return generated if isinstance(generated, dict) else {MODEL: generated}


def _ratio_axis(ax_ratio, label: str) -> None:
    ax_ratio.axhline(1, color="0.4", lw=0.8)
    ax_ratio.set_ylim(0.5, 1.5)
    ax_ratio.set_xlabel(label)
    ax_ratio.set_ylabel("model / G4", fontsize=9)


def _draw(ax, ax_ratio, reference, generated: Generated, bins, label, log) -> float:
    """Geant4 filled, each model a line with its ratio; the first model's separation power."""
    h_ref, _ = np.histogram(reference, bins, density=True)
    ax.stairs(h_ref, bins, label=REFERENCE, color="0.4", fill=True, alpha=0.4)
    for i, (name, values) in enumerate(_by_label(generated).items()):
        h_gen, _ = np.histogram(values, bins, density=True)
        ax.stairs(h_gen, bins, label=name, color=f"C{i}", lw=1.5)
        ratio = np.divide(h_gen, h_ref, out=np.full_like(h_gen, np.nan), where=h_ref > 0)
        ax_ratio.stairs(ratio, bins, color=f"C{i}", lw=1.5)
    _ratio_axis(ax_ratio, label)
    if log:
        ax.set_xscale("log")
        ax_ratio.set_xscale("log")
    return separation_power(reference, next(iter(_by_label(generated).values())), bins)


def histogram(reference, generated: Generated, label: str, path: Path, log: bool = False, n_bins: int = 50) -> float:
    """One observable: histogram + ratio panel saved to ``path`` for one model or several (a dict by
    label); returns the (first) model's separation power. ``log``: log-spaced bins on log axes (a
    spectrum over decades, such as cell energies, whose tails a linear y axis would hide)."""
    bins = histogram_edges(reference, np.concatenate(list(_by_label(generated).values())), n_bins=n_bins, log=log)
    with plt.style.context(_STYLE):
        fig, (ax, ax_ratio) = plt.subplots(2, 1, figsize=(5, 5), sharex=True, gridspec_kw={"height_ratios": (3, 1)})
        sep = _draw(ax, ax_ratio, reference, generated, bins, label, log)
        if log:
            ax.set_yscale("log")
        ax.set_ylabel("normalised")
        several = isinstance(generated, dict) and len(generated) > 1
        title = f"separation power {f'({next(iter(generated))}) ' if several else ''}{sep:.2g}"
        ax.legend(title=title, fontsize=9, title_fontsize=9)
        fig.savefig(path, dpi=110, bbox_inches="tight")
        plt.close(fig)
    return sep


def layer_grid(reference, generated, layers, label: str, path: Path, log: bool = False, n_bins: int = 30) -> np.ndarray:
    """A per-layer observable, (N, L) arrays: one small panel per layer; returns each layer's separation power."""
    count = reference.shape[1]
    cols = min(count, 5)
    rows = -(-count // cols)
    seps = np.zeros(count)
    with plt.style.context(_GRID_STYLE):
        fig = plt.figure(figsize=(3 * cols, 2.6 * rows))
        grid = fig.add_gridspec(2 * rows, cols, height_ratios=[3, 1] * rows, hspace=0.08, wspace=0.3)
        for j in range(count):
            r, c = divmod(j, cols)
            ax = fig.add_subplot(grid[2 * r, c])
            ax_ratio = fig.add_subplot(grid[2 * r + 1, c], sharex=ax)
            bins = histogram_edges(reference[:, j], generated[:, j], n_bins=n_bins, log=log)
            seps[j] = _draw(ax, ax_ratio, reference[:, j], generated[:, j], bins, "", log)
            ax.tick_params(labelbottom=False, labelsize=7)
            ax_ratio.tick_params(labelsize=7)
            ax_ratio.set_ylabel("")
            ax.set_title(f"layer {layers[j]}   sep {seps[j]:.2g}", fontsize=8)
        fig.axes[0].legend(fontsize=7)
        fig.suptitle(f"{label}   (lower panels: model / Geant4)", fontsize=12)
        fig.subplots_adjust(left=0.05, right=0.98, top=1 - 0.5 / (2.6 * rows), bottom=0.3 / (2.6 * rows))
        fig.savefig(path, dpi=70)
        plt.close(fig)
    return seps


def profile(reference: np.ndarray, generated: Generated, centres: np.ndarray, label: str, path: Path) -> None:
    """Mean energy profile (e.g. per layer or per r bin) of Geant4 and of one model or several (a
    dict by label), with their ratios."""
    with plt.style.context(_STYLE):
        fig, (ax, ax_ratio) = plt.subplots(2, 1, figsize=(5, 5), sharex=True, gridspec_kw={"height_ratios": (3, 1)})
        ax.plot(centres, reference, "o", color="0.4", ms=3, label=REFERENCE)
        for i, (name, values) in enumerate(_by_label(generated).items()):
            ax.plot(centres, values, "-", color=f"C{i}", lw=1.5, label=name)
            ratio = np.divide(values, reference, out=np.full_like(values, np.nan, dtype=float), where=reference > 0)
            ax_ratio.plot(centres, ratio, "-", color=f"C{i}")
        ax.set_yscale("log")
        ax.set_ylabel("mean energy [MeV]")
        ax.legend(fontsize=9)
        _ratio_axis(ax_ratio, label)
        fig.savefig(path, dpi=110, bbox_inches="tight")
        plt.close(fig)
