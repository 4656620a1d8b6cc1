"""Pictures: fixed probability scales, nothing drawn outside the figure, one panel per node, no leaked figures."""

import json

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.patches import FancyArrowPatch

from darts_sr.nets.discriminator import DiscriminatorGenotype
from darts_sr.nets.genotype import TPSR, GeneratorGenotype, Node
from darts_sr.search.plots import (
    discriminator_figure,
    genotype_graph,
    probability_evolution,
    probability_heatmap,
)
from operations import GENERATOR_SEARCH_SPACE

OPS = list(GENERATOR_SEARCH_SPACE)
NODES = [f"node {k}" for k in range(1, 11)]

CHAIN = GeneratorGenotype(tuple(Node("conv_7x7", k) for k in range(10)), (10,))
STAR = GeneratorGenotype(tuple(Node("conv_3x3", 0) for _ in range(10)), tuple(range(1, 11)))
GENOTYPES = {"tpsr": TPSR, "chain": CHAIN, "star": STAR, "single": GeneratorGenotype((Node("skip", 0),), (1,), scale=2)}


@pytest.fixture(autouse=True)
def no_leaked_figures():
    """Every test closes what it opens."""
    before = set(plt.get_fignums())
    yield
    assert set(plt.get_fignums()) == before, "a figure was left open"


def _inside(inner, outer, tol: float = 1.0) -> bool:
    return (
        inner.x0 >= outer.x0 - tol
        and inner.x1 <= outer.x1 + tol
        and inner.y0 >= outer.y0 - tol
        and inner.y1 <= outer.y1 + tol
    )


def _assert_everything_inside(fig) -> None:
    """Every visible artist of every axes, and the figure's own texts, lie inside the figure; patches inside their
    axes' limits too (arcs' paths in data coordinates and their drawn extent, arrow heads included)."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    for ax in fig.axes:
        x0, x1 = sorted(ax.get_xlim())
        y0, y1 = sorted(ax.get_ylim())
        for patch in ax.patches:
            if isinstance(patch, FancyArrowPatch):  # its path in data coordinates, arrow head included
                ext = patch.get_path().get_extents()
                assert x0 <= ext.x0 and ext.x1 <= x1 and y0 <= ext.y0 and ext.y1 <= y1, f"arc {ext} outside axes"
            assert _inside(patch.get_window_extent(renderer), ax.bbox), f"{patch} drawn outside its axes"
        for text in ax.texts:
            assert _inside(text.get_window_extent(renderer), fig.bbox), f"text {text.get_text()!r} outside"
        assert _inside(ax.get_tightbbox(renderer), fig.bbox), "axes decorations outside the figure"
    for text in fig.texts:
        assert _inside(text.get_window_extent(renderer), fig.bbox), f"text {text.get_text()!r} outside"


# --- heatmap ------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [0.125, 0.9])
def test_heatmap_uses_a_fixed_unit_colour_scale_with_a_colour_bar(value):
    fig = probability_heatmap(np.full((10, 8), value), NODES, OPS, "op probabilities")
    heat = fig.axes[0]
    (image,) = heat.get_images()
    assert image.get_clim() == (0.0, 1.0)
    assert len(fig.axes) == 2, "expected the heatmap and its colour bar"
    bar = fig.axes[1]
    assert bar.get_ylim() == (0.0, 1.0)
    _assert_everything_inside(fig)
    plt.close(fig)


def test_heatmap_text_contrasts_with_its_cell():
    probs = np.array([[0.02, 0.98]])
    fig = probability_heatmap(probs, ["node 1"], ["a", "b"], "")
    low, high = fig.axes[0].texts
    assert low.get_color() == "white" and high.get_color() == "black"
    assert high.get_fontweight() == "bold" and low.get_fontweight() == "normal"
    plt.close(fig)


def test_heatmap_does_not_favour_one_of_tied_entries():
    fig = probability_heatmap(np.full((2, 8), 0.125), ["a", "b"], OPS, "")
    assert all(t.get_fontweight() == "normal" for t in fig.axes[0].texts)
    plt.close(fig)


def test_heatmap_rejects_labels_that_do_not_fit():
    with pytest.raises(ValueError, match=r"shape \(2, 3\), expected \(2, 4\)"):
        probability_heatmap(np.zeros((2, 3)), ["a", "b"], ["w", "x", "y", "z"], "")


# --- generator graph ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(GENOTYPES))
def test_genotype_graph_keeps_every_arc_and_label_inside(name):
    fig = genotype_graph(GENOTYPES[name], "epoch 3")
    _assert_everything_inside(fig)
    plt.close(fig)


def test_genotype_graph_draws_one_edge_per_node_and_output_left_to_right():
    fig = genotype_graph(TPSR)
    (ax,) = fig.axes
    arrows = [p for p in ax.patches if isinstance(p, FancyArrowPatch)]
    assert len(arrows) == len(TPSR.nodes) + len(TPSR.outputs)
    red = [a for a in arrows if a.get_edgecolor()[0] > 0.7 and a.get_edgecolor()[1] < 0.3]
    assert len(red) == len(TPSR.outputs)
    for arrow in arrows:  # every edge starts at its left end and points right
        path = arrow.get_path()
        assert path.vertices[0, 0] == pytest.approx(path.get_extents().x0)
        assert path.get_extents().x1 > path.vertices[0, 0] + 0.1
    labels = [t.get_text().split("\n")[0] for t in ax.texts]
    assert labels == ["stem", *map(str, range(1, 11)), "out"]
    xs = [t.get_position()[0] for t in ax.texts]
    assert xs == sorted(xs)
    plt.close(fig)


# --- evolution ----------------------------------------------------------------------------------


def _history(epochs: int, nodes: int, summary: bool) -> list[dict]:
    rng = np.random.default_rng(0)
    records = []
    for e in range(1, epochs + 1):
        p = rng.random((nodes, len(OPS)))
        p /= p.sum(axis=1, keepdims=True)
        record = {"epoch": e, "op_probs": p.tolist()}
        if summary:
            record["max_prob"] = float(p.max(axis=1).mean())
        records.append(record)
    return records


@pytest.mark.parametrize("nodes", [1, 3, 10])
def test_evolution_has_one_unit_panel_per_node(nodes):
    history = json.loads(json.dumps(_history(6, nodes, summary=False)[::-1]))  # as read back from JSON, any order
    fig = probability_evolution(history, OPS)
    panels = [ax for ax in fig.axes if ax.get_label().startswith("node:")]
    assert len(panels) == len(fig.axes) == nodes
    for ax in panels:
        assert ax.get_ylim() == (0.0, 1.0)
        assert len(ax.get_lines()) == len(OPS)
        assert list(ax.get_lines()[0].get_xdata()) == [1, 2, 3, 4, 5, 6]
    assert len(fig.legends) == 1 and [t.get_text() for t in fig.legends[0].get_texts()] == OPS
    _assert_everything_inside(fig)
    plt.close(fig)


def test_evolution_draws_the_max_prob_summary_in_its_own_panel():
    fig = probability_evolution(_history(4, 10, summary=True), OPS, title="G")
    assert sum(ax.get_label().startswith("node:") for ax in fig.axes) == 10
    (summary,) = [ax for ax in fig.axes if ax.get_label() == "summary"]
    assert summary.get_ylim() == (0.0, 1.0) and len(summary.get_lines()) == 1
    _assert_everything_inside(fig)
    plt.close(fig)


def test_evolution_takes_node_labels_and_a_single_epoch():
    fig = probability_evolution(_history(1, 2, summary=False), OPS, node_labels=["block 0", "block 1"])
    assert [ax.get_title() for ax in fig.axes] == ["block 0", "block 1"]
    plt.close(fig)


@pytest.mark.parametrize(
    "history, match",
    [
        ([], "history is empty"),
        ([{"epoch": 1}], "record 0 needs keys 'epoch' and 'op_probs'"),
        ([{"epoch": 1, "op_probs": [[0.5, 0.5]]}], r"record 0: 'op_probs' has shape \(1, 2\), expected \(nodes, 8\)"),
        ([{"epoch": 1, "op_probs": [[0.125] * 8]}, {"epoch": 2, "op_probs": [[0.125] * 8] * 2}], "disagree"),
        (
            [{"epoch": 1, "op_probs": [[0.125] * 8], "max_prob": 0.125}, {"epoch": 2, "op_probs": [[0.125] * 8]}],
            "'max_prob' is in some",
        ),
    ],
)
def test_evolution_rejects_malformed_history(history, match):
    with pytest.raises(ValueError, match=match):
        probability_evolution(history, OPS)


# --- discriminator ------------------------------------------------------------------------------


@pytest.mark.parametrize("blocks", [1, 8, 10])
def test_discriminator_figure_shows_every_block_inside(blocks):
    genotype = DiscriminatorGenotype(("conv_3x3", "sep_5x5") * (blocks // 2) + ("dil_3x3",) * (blocks % 2))
    fig = discriminator_figure(genotype)
    (ax,) = fig.axes
    assert sum(t.get_text().startswith("block ") for t in ax.texts) == blocks
    _assert_everything_inside(fig)
    plt.close(fig)
