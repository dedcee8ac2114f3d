"""Small seaborn/matplotlib helpers shared by the chapters.

Every helper draws on a given ``ax`` (or a new one) and returns it, so chapters can compose
panels with ``plt.subplots`` and add their own touches.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns

from diffnb import data

__all__ = [
    "set_style",
    "density_contours",
    "samples_over_density",
    "loss_curve",
    "trajectories",
    "styled_table",
    "mode_frequency_bars",
    "level_snapshots",
]

LIM = 3.5  # the nine Gaussians live in [-2.5, 2.5]^2; a margin shows the tails


def set_style() -> None:
    """The book's look: seaborn's white grid, a colour-blind-safe palette, compact figures."""
    sns.set_theme(style="whitegrid", palette="colorblind", rc={"figure.figsize": (5, 5)})


def _axes(ax):
    return plt.subplots()[1] if ax is None else ax


def density_contours(mixture, ax=None, lim=LIM, scale=1.0, std=0.0, levels=8, grid=200):
    """Contours of the exact density q_t of ``scale * x0 + std * z`` (eq. ``data-noised``)."""
    ax = _axes(ax)
    u = np.linspace(-lim, lim, grid, dtype=np.float32)
    xx, yy = np.meshgrid(u, u)
    points = np.stack([xx.ravel(), yy.ravel()], axis=-1)
    density = np.exp(np.asarray(data.log_prob(mixture, points, scale, std))).reshape(xx.shape)
    ax.contour(xx, yy, density, levels=levels, cmap="Greys", linewidths=0.8, zorder=3)
    ax.set(xlim=(-lim, lim), ylim=(-lim, lim), aspect="equal")
    return ax


def samples_over_density(samples, mixture=None, ax=None, title=None, lim=LIM, max_points=3000):
    """Scatter at most ``max_points`` samples, over the mixture's density contours if given."""
    ax = _axes(ax)
    if mixture is not None:
        density_contours(mixture, ax=ax, lim=lim)
    samples = np.asarray(samples)[:max_points]
    ax.scatter(samples[:, 0], samples[:, 1], s=3, alpha=0.4, color=sns.color_palette()[0])
    ax.set(xlim=(-lim, lim), ylim=(-lim, lim), aspect="equal", title=title)
    return ax


def loss_curve(losses, ax=None, window=100, label=None):
    """Training loss per step (faint) and its moving average over ``window`` steps, log y-axis."""
    ax = _axes(ax)
    losses = np.asarray(losses, dtype=np.float64)
    steps = np.arange(1, losses.size + 1)
    (line,) = ax.plot(steps, losses, alpha=0.25, lw=0.7)
    if losses.size >= window:
        smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
        ax.plot(steps[window - 1 :], smooth, color=line.get_color(), label=label)
    ax.set(yscale="log", xlabel="step", ylabel="loss")
    return ax


def trajectories(trajectory, ax=None, num_paths=30, lim=LIM):
    """Paths of ``num_paths`` points through a sampler's trajectory (steps + 1, n, 2).

    Start points are marked with a dot, end points with a cross.
    """
    ax = _axes(ax)
    paths = np.asarray(trajectory)[:, :num_paths]
    ax.plot(paths[..., 0], paths[..., 1], lw=0.6, alpha=0.6)
    ax.scatter(paths[0, :, 0], paths[0, :, 1], s=8, color="grey")
    ax.scatter(paths[-1, :, 0], paths[-1, :, 1], s=12, marker="x", color="black")
    ax.set(xlim=(-lim, lim), ylim=(-lim, lim), aspect="equal")
    return ax


# Padded cells that do not wrap: without them the theme runs the columns together.
_TABLE_STYLES = [
    {"selector": "th, td", "props": [("padding", "0.2em 0.7em"), ("white-space", "nowrap")]}
]


def styled_table(frame, formats="{:.3g}", hide_index=True):
    """``frame`` as the book's HTML table: a pandas ``Styler`` with rounded, padded cells.

    ``formats`` is one format for every column, or a dict from column to format (a format
    string or a callable), as ``Styler.format`` takes it. Return it as a cell's last
    expression; never print a table as text.
    """
    styler = frame.style.format(formats).set_table_styles(_TABLE_STYLES, overwrite=False)
    return styler.hide(axis="index") if hide_index else styler


def mode_frequency_bars(labels, series, ax=None):
    """Grouped bars of per-mode fractions: ``series`` maps a legend label to a (K,) array.

    Hatches tell the groups apart where colours alone would not; the legend sits above the
    axes, so it never hides a bar.
    """
    ax = _axes(ax)
    labels = list(labels)
    width = 0.8 / len(series)
    hatches = ["", "//", "..", "xx", "\\\\"]
    for j, (name, values) in enumerate(series.items()):
        offsets = np.arange(len(labels)) + (j - (len(series) - 1) / 2) * width
        ax.bar(offsets, np.asarray(values), width, label=name, hatch=hatches[j % len(hatches)],
               edgecolor="white", linewidth=0.5)  # fmt: skip
    ax.set_xticks(np.arange(len(labels)), labels, fontsize=9)
    ax.set(xlabel="mode (nearest component mean)", ylabel="fraction")
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=len(series), frameon=False,
              fontsize=9)  # fmt: skip
    return ax


def level_snapshots(trajectory, sigmas, levels, mixture=None, notes=None, max_points=3000,
                    lim=LIM, panel_size=2.6):  # fmt: skip
    """One small scatter panel per chosen level of an annealed Langevin trajectory.

    ``trajectory`` is (L + 1, n, 2) as returned by ``samplers.annealed_langevin`` (the initial
    draw first, then the cloud after each level); ``levels`` are 1-based level indices i. Each
    panel shows the cloud after level i over the contours of the exact noised density
    q_{sigma_i} (when ``mixture`` is given), with ``notes[k]`` under panel k. Returns the axes.
    """
    trajectory, sigmas = np.asarray(trajectory), np.asarray(sigmas)
    fig, axes = plt.subplots(1, len(levels), figsize=(panel_size * len(levels), panel_size + 0.4))
    axes = np.atleast_1d(axes)
    for k, (ax, i) in enumerate(zip(axes, levels, strict=True)):
        if mixture is not None:
            density_contours(mixture, ax=ax, lim=lim, std=float(sigmas[i - 1]), levels=6)
        cloud = trajectory[i, :max_points]
        ax.scatter(cloud[:, 0], cloud[:, 1], s=1, alpha=0.3, color=sns.color_palette()[0])
        ax.set(xlim=(-lim, lim), ylim=(-lim, lim), aspect="equal", xticks=[], yticks=[])
        ax.set_title(f"$i={i}$, $\\sigma_i={sigmas[i - 1]:.3g}$", fontsize=14)
        if notes is not None:
            ax.set_xlabel(notes[k], fontsize=14)
    return axes
