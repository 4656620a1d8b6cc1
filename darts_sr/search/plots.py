"""Pictures for TensorBoard and reports: architecture probabilities, their evolution, and genotype graphs.

Every function returns a matplotlib ``Figure`` and leaves closing it to the caller (TensorBoard's ``add_figure``
closes it; elsewhere call ``plt.close(fig)``). Probabilities are drawn on a fixed 0-1 scale so that pictures of
different epochs compare by colour and height alone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display on servers; set before pyplot loads
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # noqa: E402
from matplotlib.path import Path  # noqa: E402

from darts_sr.nets.discriminator import DiscriminatorGenotype, block_layout, block_norm  # noqa: E402
from darts_sr.nets.genotype import GeneratorGenotype  # noqa: E402

PROB_CMAP = "viridis"


# --- probability tables ----------------------------------------------------------------------


def probability_heatmap(probs: Any, row_labels: Sequence[str], col_labels: Sequence[str], title: str) -> Figure:
    """A (rows, cols) table of probabilities in [0, 1] as an annotated heatmap on a fixed 0-1 colour scale.

    The colour bar always spans 0-1, so a flat row (0.125 each of 8 ops) stays dark and a decided one bright,
    whatever the epoch. A row's largest entry is written in bold unless tied.
    """
    probs = np.asarray(probs, dtype=float)
    if probs.ndim != 2 or probs.shape != (len(row_labels), len(col_labels)):
        raise ValueError(
            f"probs has shape {probs.shape}, expected ({len(row_labels)}, {len(col_labels)}) from the labels"
        )
    rows, cols = probs.shape
    fig, ax = plt.subplots(figsize=(2.2 + 0.62 * cols, 1.3 + 0.32 * rows))
    image = ax.imshow(probs, vmin=0.0, vmax=1.0, cmap=PROB_CMAP, aspect="auto", interpolation="nearest")
    bar = fig.colorbar(image, ax=ax, fraction=0.05, pad=0.03)
    bar.set_ticks([0.0, 0.25, 0.5, 0.75, 1.0])
    bar.ax.tick_params(labelsize=7)
    bar.set_label("probability", fontsize=7)
    ax.set_xticks(range(cols), col_labels, rotation=40, ha="right", fontsize=8)
    ax.set_yticks(range(rows), row_labels, fontsize=8)
    ax.tick_params(length=0)
    # Bold marks a row's largest entry, only where it is unique: a flat row has no favourite.
    row_best = np.full(rows, -1)
    if cols:
        ranked = np.sort(probs, axis=1)
        unique = ranked[:, -1] - ranked[:, -2] > 1e-6 if cols > 1 else np.ones(rows, dtype=bool)
        row_best = np.where(unique, probs.argmax(axis=1), -1)
    for (i, j), p in np.ndenumerate(probs):
        ax.text(
            j,
            i,
            f"{p:.2f}",
            ha="center",
            va="center",
            fontsize=6.5,
            color=_text_colour(image.cmap(image.norm(p))),
            fontweight="bold" if j == row_best[i] else "normal",
        )
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def _text_colour(rgba: Sequence[float]) -> str:
    """Black on light cells, white on dark ones (relative luminance of the cell colour)."""
    r, g, b = rgba[:3]
    return "black" if 0.2126 * r + 0.7152 * g + 0.0722 * b > 0.45 else "white"


def probability_evolution(
    history: Sequence[Mapping[str, Any]],
    op_names: Sequence[str],
    node_labels: Sequence[str] | None = None,
    title: str = "op probabilities over epochs",
) -> Figure:
    """Each node's op probabilities across epochs: one small panel per node, one line per op, y fixed to 0-1.

    ``history`` is a list of per-epoch records as a search keeps them (plain JSON types work):
    ``{"epoch": int, "op_probs": [[p_op for op in op_names] for each node], "max_prob": float (optional)}``.
    Records are drawn in epoch order. When records carry ``max_prob`` (a one-number summary of how decided the
    search is, e.g. the mean over nodes of each node's largest op probability), it gets a panel of its own.
    ``node_labels`` defaults to ``node 1`` .. ``node N``.
    """
    epochs, probs, summary = _evolution_arrays(history, len(op_names))
    n_nodes = probs.shape[1]
    labels = list(node_labels) if node_labels is not None else [f"node {k}" for k in range(1, n_nodes + 1)]
    if len(labels) != n_nodes:
        raise ValueError(f"{len(labels)} node labels for {n_nodes} nodes")
    panels = n_nodes + (summary is not None)
    ncols = min(panels, 5)
    nrows = -(-panels // ncols)
    fig, axes = plt.subplots(
        nrows,
        ncols,
        figsize=(0.6 + 2.1 * ncols, 1.1 + 1.55 * nrows),
        sharex=True,
        sharey=True,
        squeeze=False,
        layout="constrained",
    )
    colours = plt.get_cmap("tab10" if len(op_names) <= 10 else "tab20").colors
    marker = "o" if len(epochs) <= 30 else None
    handles = []
    for k, ax in enumerate(axes.flat):
        if k >= panels:
            ax.remove()
            continue
        if k < n_nodes:
            ax.set_label(f"node:{k + 1}")
            ax.set_title(labels[k], fontsize=8, pad=3)
            for j in range(len(op_names)):
                (line,) = ax.plot(
                    epochs, probs[:, k, j], color=colours[j % len(colours)], lw=1.2, marker=marker, ms=2.5
                )
                if k == 0:
                    handles.append(line)
        else:
            ax.set_label("summary")
            ax.set_title("max prob (summary)", fontsize=8, pad=3)
            ax.plot(epochs, summary, color="black", lw=1.4, ls="--", marker=marker, ms=2.5)
        _probability_axes(ax, epochs)
    for col in range(ncols):  # the lowest panel of each column carries the axis label
        axes.flat[range(col, panels, ncols)[-1]].set_xlabel("epoch", fontsize=7)
    legend_columns = max(1, min(len(op_names), int(fig.get_figwidth() / 1.15)))  # ~1.15 in per entry at 7 pt
    fig.legend(handles, list(op_names), loc="outside lower center", ncol=legend_columns, fontsize=7)
    fig.suptitle(title, fontsize=9)
    return fig


def _probability_axes(ax: Axes, epochs: np.ndarray) -> None:
    ax.set_ylim(0.0, 1.0)
    ax.set_yticks([0.0, 0.5, 1.0])
    ax.grid(True, lw=0.4, alpha=0.5)
    ax.tick_params(labelsize=6.5, labelbottom=True, length=2)
    ax.xaxis.get_major_locator().set_params(integer=True)
    if len(epochs) == 1:
        ax.set_xlim(epochs[0] - 1, epochs[0] + 1)
    for line in ax.get_lines():
        line.set_clip_on(False)  # probabilities of exactly 0 or 1 sit on the frame; draw them whole


def _evolution_arrays(
    history: Sequence[Mapping[str, Any]], n_ops: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """``(epochs (E,), op_probs (E, N, n_ops), max_prob (E,) or None)`` in epoch order, validated."""
    if not history:
        raise ValueError("history is empty: need at least one record with 'epoch' and 'op_probs'")
    rows = []
    for i, record in enumerate(history):
        if not isinstance(record, Mapping) or "epoch" not in record or "op_probs" not in record:
            raise ValueError(f"history record {i} needs keys 'epoch' and 'op_probs'")
        p = np.asarray(record["op_probs"], dtype=float)
        if p.ndim != 2 or p.shape[1] != n_ops or p.shape[0] == 0:
            raise ValueError(f"history record {i}: 'op_probs' has shape {p.shape}, expected (nodes, {n_ops})")
        rows.append((int(record["epoch"]), p, record.get("max_prob")))
    rows.sort(key=lambda r: r[0])
    shapes = {p.shape for _, p, _ in rows}
    if len(shapes) > 1:
        raise ValueError(f"history records disagree on the number of nodes: shapes {sorted(shapes)}")
    have_summary = [m is not None for _, _, m in rows]
    if any(have_summary) and not all(have_summary):
        raise ValueError("'max_prob' is in some history records but not all")
    epochs = np.array([e for e, _, _ in rows])
    summary = np.array([float(m) for _, _, m in rows]) if all(have_summary) else None
    return epochs, np.stack([p for _, p, _ in rows]), summary


# --- generator genotype ------------------------------------------------------------------------

_BOX_W, _BOX_H = 0.78, 0.62  # node boxes, in data units (one unit between neighbouring nodes)
_ARC_BASE, _ARC_STEP = 0.32, 0.2  # arc height above the boxes for a span of 2 nodes, and per extra node spanned
_ARROW_ROOM = 0.12  # head room beyond the highest arc for its line width
_INCH_X, _INCH_Y = 0.95, 0.62  # inches per data unit
_TITLE_IN = 0.35


def arc_height(span: int) -> float:
    """Height above (or below) the boxes of an arc joining two nodes ``span`` positions apart (span >= 2)."""
    return _ARC_BASE + _ARC_STEP * (span - 2)


def genotype_graph(genotype: GeneratorGenotype, title: str = "") -> Figure:
    """The generator as a graph: stem, nodes 1..N and the output sum left to right.

    A node reading its left neighbour gets a straight arrow; longer reads are grey arcs above the boxes.
    Output nodes have a red frame and a red arc below the boxes into ``out`` (sum, PReLU, upsampler).
    Arc heights are computed and the axes limits set from them, so every arc and label is inside the picture.
    """
    n = len(genotype.nodes)
    out_x = n + 1
    half_h = _BOX_H / 2

    above = [(node.input, k) for k, node in enumerate(genotype.nodes, start=1) if k - node.input >= 2]
    below = [(o, out_x) for o in genotype.outputs if out_x - o >= 2]
    top = half_h + max((arc_height(b - a) for a, b in above), default=0.0) + _ARROW_ROOM
    bottom = -half_h - max((arc_height(b - a) for a, b in below), default=0.0) - _ARROW_ROOM
    top, bottom = max(top, half_h + 0.25), min(bottom, -half_h - 0.25)
    left, right = -0.5, out_x + 0.5

    width_in = _INCH_X * (right - left)
    height_in = _INCH_Y * (top - bottom) + _TITLE_IN
    fig = plt.figure(figsize=(width_in, height_in))
    ax = fig.add_axes((0.0, 0.0, 1.0, 1.0 - _TITLE_IN / height_in))
    ax.set_xlim(left, right)
    ax.set_ylim(bottom, top)
    ax.axis("off")

    # Arcs leave a box at spread-out points so that several arcs from one node stay apart: the widest arc leaves
    # farthest left and so encloses the narrower ones. Into ``out`` the widest arrives farthest right.
    starts = _spread(above, key=lambda arc: arc[0], outer_first=True)
    ends = _spread(below, key=lambda arc: arc[1], outer_first=False)
    for a, b in above:
        _arc(ax, a + starts[(a, b)], b, half_h, arc_height(b - a), colour="0.35")
    for a, b in below:
        _arc(ax, a, b + ends[(a, b)], -half_h, -arc_height(b - a), colour="tab:red")
    for k, node in enumerate(genotype.nodes, start=1):
        if node.input == k - 1:
            _straight(ax, k - 1, k, colour="0.35")
    if n in genotype.outputs:
        _straight(ax, n, out_x, colour="tab:red")

    _box(ax, 0, "stem\nconv_3x3", face="0.55", edge="0.35")
    for k, node in enumerate(genotype.nodes, start=1):
        is_output = k in genotype.outputs
        _box(ax, k, f"{k}\n{node.op}", face="tab:blue", edge="tab:red" if is_output else "tab:blue", lw=2.2)
    _box(ax, out_x, f"out\nΣ→x{genotype.scale}", face="tab:red", edge="tab:red")
    fig.suptitle(
        title or f"x{genotype.scale}, {genotype.channels} channels, {n} node{'s' if n > 1 else ''}",
        fontsize=9,
        y=1.0 - 0.08 / height_in,
        va="top",
    )
    return fig


def _spread(arcs: list[tuple[int, int]], key, outer_first: bool) -> dict[tuple[int, int], float]:
    """Offsets along the box edge for arcs sharing an end (``key``), ordered by span."""
    offsets: dict[tuple[int, int], float] = {}
    groups: dict[int, list[tuple[int, int]]] = {}
    for arc in arcs:
        groups.setdefault(key(arc), []).append(arc)
    reach = 0.3 * _BOX_W
    for group in groups.values():
        group.sort(key=lambda arc: arc[1] - arc[0], reverse=outer_first)
        m = len(group)
        for i, arc in enumerate(group):
            offsets[arc] = 0.0 if m == 1 else -reach + 2 * reach * i / (m - 1)
    return offsets


def _arc(ax: Axes, x0: float, x1: float, y0: float, height: float, colour: str) -> None:
    """A half-ellipse from (x0, y0) to (x1, y0) peaking at y0 + height, with an arrow head at (x1, y0)."""
    t = np.linspace(0.0, np.pi, 48)
    xs = (x0 + x1) / 2 - (x1 - x0) / 2 * np.cos(t)
    ys = y0 + height * np.sin(t)
    path = Path(np.column_stack([xs, ys]))
    ax.add_patch(FancyArrowPatch(path=path, arrowstyle="-|>", mutation_scale=9, lw=1.0, color=colour, zorder=2))


def _straight(ax: Axes, a: int, b: int, colour: str) -> None:
    path = Path([(a + _BOX_W / 2, 0.0), (b - _BOX_W / 2, 0.0)])
    ax.add_patch(FancyArrowPatch(path=path, arrowstyle="-|>", mutation_scale=9, lw=1.0, color=colour, zorder=2))


def _box(ax: Axes, x: float, label: str, face: str, edge: str, lw: float = 1.0) -> None:
    ax.add_patch(
        FancyBboxPatch(
            (x - _BOX_W / 2, -_BOX_H / 2),
            _BOX_W,
            _BOX_H,
            boxstyle="round,pad=0,rounding_size=0.08",
            facecolor=face,
            edgecolor=edge,
            lw=lw,
            zorder=3,
        )
    )
    ax.text(x, 0.0, label, ha="center", va="center", color="white", fontsize=7, zorder=4, linespacing=1.3)


# --- discriminator genotype --------------------------------------------------------------------


def discriminator_figure(genotype: DiscriminatorGenotype, title: str = "") -> Figure:
    """Blocks left to right as boxes whose height grows with width; op, channels, stride and norm written in each.

    Stride-1 blocks are blue, stride-2 blocks purple; the head (pool + MLP, or the 1 x 1 conv to patch logits) is
    the red box on the right.
    """
    layout = block_layout(len(genotype.blocks), genotype.base_width)
    widest = max(c_out for _, c_out, _ in layout)
    n = len(layout)
    half_max = (0.9 + 1.6) / 2  # tallest box
    left, right, top, bottom = -0.6, n + 0.6, half_max + 0.1, -half_max - 0.45
    width_in, height_in = 0.6 + 1.05 * (right - left), 0.95 * (top - bottom) + _TITLE_IN
    fig = plt.figure(figsize=(width_in, height_in))
    ax = fig.add_axes((0.0, 0.0, 1.0, 1.0 - _TITLE_IN / height_in))
    ax.set_xlim(left, right)
    ax.set_ylim(bottom, top)
    ax.axis("off")
    for i, (op, (_, c_out, stride)) in enumerate(zip(genotype.blocks, layout)):
        height = 0.9 + 1.6 * c_out / widest
        colour = "tab:blue" if stride == 1 else "tab:purple"
        ax.add_patch(plt.Rectangle((i - 0.4, -height / 2), 0.8, height, color=colour, alpha=0.85, zorder=2))
        norm = block_norm(i, genotype.norm)
        norm = "no norm" if norm == "none" else f"{norm} norm"
        ax.text(i, 0, f"{op}\n{c_out} ch\nstride {stride}\n{norm}", ha="center", va="center", fontsize=7, color="w")
        ax.text(i, -half_max - 0.05, f"block {i}", ha="center", va="top", fontsize=7, color="0.3")
        _straight_between(ax, i + 0.4, i + 0.6)
    ax.add_patch(plt.Rectangle((n - 0.4, -0.45), 0.8, 0.9, color="tab:red", alpha=0.85, zorder=2))
    head = "pool\nMLP\n→ logit" if genotype.head == "pool" else "conv 1×1\n→ patch\nlogits"
    ax.text(n, 0, head, ha="center", va="center", fontsize=7, color="w")
    fig.suptitle(
        title or f"discriminator, base width {genotype.base_width}, norm {genotype.norm}",
        fontsize=9,
        y=1.0 - 0.08 / height_in,
        va="top",
    )
    return fig


def _straight_between(ax: Axes, x0: float, x1: float) -> None:
    path = Path([(x0, 0.0), (x1, 0.0)])
    ax.add_patch(FancyArrowPatch(path=path, arrowstyle="-|>", mutation_scale=8, lw=1.0, color="0.3", zorder=1))
