"""Pictures for TensorBoard and reports: architecture probabilities and genotype graphs."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # no display on servers; set before pyplot loads
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from darts_sr.genotype import GeneratorGenotype  # noqa: E402


def probability_heatmap(probs: np.ndarray, row_labels: list[str], col_labels: list[str], title: str) -> Figure:
    """A (rows, cols) probability table as an annotated heatmap."""
    fig, ax = plt.subplots(figsize=(1.0 + 0.75 * len(col_labels), 0.8 + 0.4 * len(row_labels)))
    ax.imshow(probs, vmin=0.0, vmax=max(1e-6, float(probs.max())), cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(col_labels)), col_labels, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(row_labels)), row_labels, fontsize=8)
    for (i, j), p in np.ndenumerate(probs):
        ax.text(j, i, f"{p:.2f}", ha="center", va="center", fontsize=6, color="w" if p < 0.6 * probs.max() else "k")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def genotype_graph(genotype: GeneratorGenotype, title: str = "") -> Figure:
    """Nodes left to right, arcs from each node's input, the output sum on the right."""
    n = len(genotype.nodes)
    fig, ax = plt.subplots(figsize=(1.2 + 1.0 * (n + 2), 3.2))
    xs = {k: k for k in range(n + 1)}
    out_x = n + 1
    for k, node in enumerate(genotype.nodes, start=1):
        src = node.input
        height = 0.25 * (k - src)
        ax.annotate(
            "", xy=(xs[k], 0), xytext=(xs[src], 0),
            arrowprops={"arrowstyle": "->", "connectionstyle": f"arc3,rad={-min(0.9, height)}", "color": "0.3"},
        )  # fmt: skip
        ax.text(xs[k], -0.35, node.op, ha="center", va="top", fontsize=7, rotation=30)
    for o in genotype.outputs:
        ax.annotate(
            "", xy=(out_x, 0), xytext=(xs[o], 0),
            arrowprops={"arrowstyle": "->", "connectionstyle": "arc3,rad=0.4", "color": "tab:red"},
        )  # fmt: skip
    labels = ["stem", *[str(k) for k in range(1, n + 1)]]
    for k, label in enumerate(labels):
        ax.scatter([xs[k]], [0], s=420, color="tab:blue" if k else "tab:gray", zorder=3)
        ax.text(xs[k], 0, label, ha="center", va="center", color="w", fontsize=7, zorder=4)
    ax.scatter([out_x], [0], s=420, color="tab:red", zorder=3)
    ax.text(out_x, 0, "out", ha="center", va="center", color="w", fontsize=7, zorder=4)
    ax.set_xlim(-0.7, out_x + 0.7)
    ax.set_ylim(-1.4, 1.6)
    ax.axis("off")
    ax.set_title(title or f"x{genotype.scale}, {genotype.channels} channels", fontsize=9)
    fig.tight_layout()
    return fig
