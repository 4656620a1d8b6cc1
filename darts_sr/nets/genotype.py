"""Genotypes: the discrete architecture of a derived generator, as validated, JSON-serialisable data.

A generator genotype lists nodes 1..N. Node k applies one operation to one earlier tensor:
input 0 is the stem output, input j (1 <= j < k) is node j. The outputs named in ``outputs``
are summed, passed through a PReLU and upsampled. See ``darts_sr.nets.networks.Generator``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from darts_sr.errors import UserError
from darts_sr.io import atomic_write_text
from operations import GENERATOR_OPS

G = TypeVar("G")

SCALES = (2, 3, 4)


class GenotypeError(UserError, ValueError):
    """A genotype that cannot be built; the message says what and where."""


@dataclass(frozen=True)
class Node:
    op: str
    input: int


@dataclass(frozen=True)
class GeneratorGenotype:
    """A derived generator. ``outputs`` holds 1-based node indices, kept sorted."""

    nodes: tuple[Node, ...]
    outputs: tuple[int, ...]
    channels: int = 16
    scale: int = 4

    def __post_init__(self):
        object.__setattr__(self, "nodes", tuple(self.nodes))
        object.__setattr__(self, "outputs", tuple(sorted(self.outputs)))
        _validate_generator(self)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "generator",
            "channels": self.channels,
            "scale": self.scale,
            "nodes": [{"op": n.op, "input": n.input} for n in self.nodes],
            "outputs": list(self.outputs),
        }

    @classmethod
    def from_dict(cls, data: Any) -> GeneratorGenotype:
        if not isinstance(data, dict):
            raise GenotypeError("a generator genotype must be a JSON object")
        _check_keys(data, required={"nodes", "outputs"}, optional={"kind", "channels", "scale"}, where="genotype")
        if data.get("kind", "generator") != "generator":
            raise GenotypeError(f"kind is {data['kind']!r}, expected 'generator'")
        raw_nodes = data["nodes"]
        if not isinstance(raw_nodes, list):
            raise GenotypeError("'nodes' must be a list")
        nodes = []
        for k, raw in enumerate(raw_nodes, start=1):
            if not isinstance(raw, dict):
                raise GenotypeError(f"node {k} must be an object with 'op' and 'input'")
            _check_keys(raw, required={"op", "input"}, optional=set(), where=f"node {k}")
            nodes.append(
                Node(op=_typed(raw["op"], str, f"node {k} 'op'"), input=_typed(raw["input"], int, f"node {k} 'input'"))
            )
        outputs = data["outputs"]
        if not isinstance(outputs, list):
            raise GenotypeError("'outputs' must be a list of node indices")
        return cls(
            nodes=tuple(nodes),
            outputs=tuple(_typed(o, int, "'outputs' entry") for o in outputs),
            channels=_typed(data.get("channels", 16), int, "'channels'"),
            scale=_typed(data.get("scale", 4), int, "'scale'"),
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def canonical_form(self) -> str:
        """The same string for every genotype that builds the same network up to the order of its nodes.

        Every node reads exactly one state, so the live nodes form a tree rooted at the stem; two genotypes build
        the same network exactly when their trees are isomorphic, with ops and output membership as labels
        (renumbering nodes only permutes parallel branches, whose outputs are summed). The form is the tree's
        canonical string (Aho-Hopcroft-Ullman: children's strings sorted)."""
        children: dict[int, list[int]] = {k: [] for k in range(len(self.nodes) + 1)}
        for k, node in enumerate(self.nodes, start=1):  # a genotype has no dead nodes (validated)
            children[node.input].append(k)

        def form(k: int) -> str:
            label = "stem" if k == 0 else self.nodes[k - 1].op + ("*" if k in self.outputs else "")
            return label + "(" + ",".join(sorted(form(c) for c in children[k])) + ")"

        return f"x{self.scale} c{self.channels} " + form(0)

    def describe(self) -> str:
        """One line per node, readable in logs and TensorBoard."""
        lines = [f"generator x{self.scale}, {self.channels} channels"]
        lines += [
            f"node {k} <- {'stem' if n.input == 0 else f'node {n.input}'}: {n.op}" for k, n in enumerate(self.nodes, 1)
        ]
        lines.append("output = PReLU(" + " + ".join(f"node {o}" for o in self.outputs) + ")")
        return "\n".join(lines)


def _validate_generator(g: GeneratorGenotype) -> None:
    if g.scale not in SCALES:
        raise GenotypeError(f"scale {g.scale} is not supported; use one of {SCALES}")
    if g.channels < 1:
        raise GenotypeError(f"channels must be positive, got {g.channels}")
    if not g.nodes:
        raise GenotypeError("a generator needs at least one node")
    for k, node in enumerate(g.nodes, start=1):
        if node.op == "none":
            raise GenotypeError(f"node {k}: op 'none' exists only in the supernet, not in a derived genotype")
        if node.op not in GENERATOR_OPS:
            raise GenotypeError(f"node {k}: unknown op {node.op!r}; known: {', '.join(GENERATOR_OPS)}")
        if not 0 <= node.input < k:
            raise GenotypeError(
                f"node {k}: input {node.input} is not an earlier node (use 0 for the stem or 1..{k - 1})"
            )
    if not g.outputs:
        raise GenotypeError("'outputs' is empty: at least one node must feed the output")
    if len(set(g.outputs)) != len(g.outputs):
        raise GenotypeError(f"'outputs' repeats a node: {list(g.outputs)}")
    for o in g.outputs:
        if not 1 <= o <= len(g.nodes):
            raise GenotypeError(f"output {o} is not a node (nodes are 1..{len(g.nodes)})")
    dead = sorted(set(range(1, len(g.nodes) + 1)) - live_nodes(g.nodes, g.outputs))
    if dead:
        raise GenotypeError(f"nodes {dead} do not reach the output; remove them")


def live_nodes(nodes: tuple[Node, ...], outputs: tuple[int, ...]) -> set[int]:
    """1-based indices of the nodes that some output depends on."""
    live, stack = set(), list(outputs)
    while stack:
        k = stack.pop()
        if k == 0 or k in live:
            continue
        live.add(k)
        stack.append(nodes[k - 1].input)
    return live


def prune(nodes: tuple[Node, ...], outputs: tuple[int, ...], channels: int, scale: int) -> GeneratorGenotype:
    """Drops nodes no output depends on and renumbers the rest, keeping their order."""
    live = sorted(live_nodes(nodes, outputs))
    new_index = {0: 0} | {old: new for new, old in enumerate(live, start=1)}
    kept = tuple(Node(nodes[k - 1].op, new_index[nodes[k - 1].input]) for k in live)
    return GeneratorGenotype(kept, tuple(new_index[o] for o in outputs), channels, scale)


def _check_keys(data: dict, required: set[str], optional: set[str], where: str) -> None:
    unknown = sorted(set(data) - required - optional)
    if unknown:
        raise GenotypeError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(required | optional)}")
    missing = sorted(required - set(data))
    if missing:
        raise GenotypeError(f"{where}: missing key(s) {missing}")


def _typed(value: Any, kind: type, what: str) -> Any:
    # bool is an int subclass; a genotype with "input": true is a mistake, not node 1.
    if not isinstance(value, kind) or isinstance(value, bool):
        raise GenotypeError(f"{what} must be {kind.__name__}, got {value!r}")
    return value


# TPSR (ECCV 2020), x4. Node k here is TPSR's node k-1 (its published wiring: n0 <- stem: sep5, n1 <- n0: conv7, ...).
TPSR = GeneratorGenotype(
    nodes=(
        Node("sep_5x5", 0),  # n0 <- stem
        Node("conv_7x7", 1),  # n1 <- n0
        Node("conv_7x7", 2),  # n2 <- n1
        Node("conv_3x3", 3),  # n3 <- n2
        Node("conv_3x3", 3),  # n4 <- n2
        Node("conv_5x5", 5),  # n5 <- n4
        Node("sep_3x3", 6),  # n6 <- n5
        Node("conv_5x5", 4),  # n7 <- n3
        Node("conv_3x3", 8),  # n8 <- n7
        Node("conv_7x7", 0),  # n9 <- stem
    ),
    outputs=(7, 9, 10),
    channels=16,
    scale=4,
)


def plain_chain(*ops: str, channels: int = 16, scale: int = 4) -> GeneratorGenotype:
    """Node k reads node k-1 (the first reads the stem); the last is the output."""
    return GeneratorGenotype(tuple(Node(op, k) for k, op in enumerate(ops)), (len(ops),), channels, scale)


# Hand-designed tiny SR bodies, as plain chains of the search space: the references a latency frontier sets the search
# against. The wiring of ESPCN (Shi et al., CVPR 2016: a 5x5 then a 3x3 convolution before the sub-pixel upsampler)
# and of FSRCNN's body (Dong et al., ECCV 2016: 5x5 feature extraction, four 3x3 mapping layers; its 1x1 shrink and
# expand have no op here), at the space's width and with its stem and upsampler, not the papers' widths.
ESPCN_LIKE = plain_chain("conv_5x5", "conv_3x3")
FSRCNN_LIKE = plain_chain("conv_5x5", "conv_3x3", "conv_3x3", "conv_3x3", "conv_3x3")

BUILTIN_GENERATORS: dict[str, GeneratorGenotype] = {"tpsr": TPSR, "espcn_like": ESPCN_LIKE, "fsrcnn_like": FSRCNN_LIKE}


def load_generator_genotype(spec: str | os.PathLike) -> GeneratorGenotype:
    """A built-in name (``tpsr``, ``espcn_like``, ``fsrcnn_like``) or a JSON file. Errors name the file."""
    return load_genotype(spec, BUILTIN_GENERATORS, GeneratorGenotype.from_dict)


def load_genotype(spec: str | os.PathLike, builtins: dict[str, G], from_dict: Callable[[Any], G]) -> G:
    """A built-in name or a JSON file parsed by ``from_dict``; every error names the file."""
    if str(spec) in builtins:
        return builtins[str(spec)]
    path = Path(spec)
    try:
        text = path.read_text()
    except OSError as e:
        raise GenotypeError(
            f"{path}: cannot read genotype ({e.strerror or e}); built-ins: {', '.join(builtins)}"
        ) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise GenotypeError(f"{path}: not valid JSON ({e})") from None
    try:
        return from_dict(data)
    except GenotypeError as e:
        raise GenotypeError(f"{path}: {e}") from None


def save_genotype(genotype: GeneratorGenotype, path: str | os.PathLike) -> None:
    atomic_write_text(Path(path), genotype.to_json() + "\n")
