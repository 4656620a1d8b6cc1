"""The discriminator supernet (stage 2): SRGAN's macro with a mixed op in every block.

The macro is ``darts_sr.nets.discriminator.Discriminator``'s: ``blocks`` conv blocks, stride 2 on every second one,
widths ``base_width * 2 ** (i // 2)`` capped at 8x, no normalisation on block 0, then global average pooling ->
Linear(c_last, 16 * base_width) -> LeakyReLU(0.2) -> Linear(.., 1). Blocks are built from the discriminator op
table (``operations.discriminator.D_OPS``), the same table ``Discriminator(genotype)`` builds from.

Architecture parameters (``nn.Parameter``s in the state dict, kept apart from the weights):

- ``alpha``       (blocks, n_ops): softmax over candidate ops, per block;
- ``alpha_width`` (n_widths,): softmax over candidate base widths, for the whole network;
- ``alpha_norm``  (n_norms,): softmax over candidate normalisations (none / batch / spectral), for the whole network;
- ``alpha_head``  (n_heads,): softmax over candidate heads (pool / patch, ``darts_sr.nets.discriminator``).

A single candidate width, norm or head means it is configured rather than searched (its softmax is constantly 1),
and only that head is built.

Widths are searched by channel masking (FBNetV2): the supernet is built at the widest candidate and each block's
output is multiplied by ``sum_w p_w * mask_w``, where ``mask_w`` keeps the first ``c_out(w)`` channels. For a one-hot
width this is exactly the narrower network whose weights are the leading slices of the wide ones (tested), and it
costs one wide network instead of one network per width. Norms share each op's convolutions (``SharedNormOp``):
every block op is a chain of convolutions, which is linear, so the op is computed once without its last bias and
each candidate norm adds only its tail: none and spectral the bias (spectral after dividing by the kernels' largest
singular values), batch a BatchNorm; then LeakyReLU. A norm candidate costs an elementwise tail instead of another
set of convolutions, so searching three norms costs about what one does. For a one-hot norm (none or batch) and
width this is exactly the derived network whose weights are the slices (tested); block 0 has no normalisation in
every candidate. Heads are mixed at the
output: the pool head's (B, 1) logit broadcasts against the patch head's (B, N) patch logits, so with both heads
searched every patch logit is ``p_pool * pool + p_patch * patch_n`` and the output is (B, N); with the pool head
alone it is (B, 1), with the patch head alone (B, N), exactly as the derived ``Discriminator``.

Images are float tensors in [0, 1], (B, 3, H, W) RGB; the output is raw logits, (B, 1) or (B, N).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from darts_sr.nets.discriminator import (
    HEAD_WIDTH_FACTOR,
    DiscriminatorGenotype,
    block_layout,
    block_norm,
    discriminator_macs,
    head_macs,
)
from darts_sr.search.relaxation import probabilities
from operations.discriminator import D_OPS, D_SEARCH_SPACE, HEADS, LEAKY_SLOPE, NORMS, build_d_op, out_size

# HR patch side at which discriminator MACs are counted by default: ESRGAN's 128 x 128 training crops.
D_REFERENCE_SIZE = 128
SPECTRAL_INIT_ITERATIONS = 15  # power iterations at construction, as torch's spectral_norm


class SharedNormOp(nn.Module):
    """One candidate op of one block, computed once for all candidate norms: (B, C_in, H, W) -> one output per norm,
    each (B, C_out, H', W').

    The op is ``D_OPS[name]`` built without normalisation, a chain of convolutions; only the last may have a bias
    (true of every op in the table, checked here). With ``y`` the chain without that bias and ``b`` the bias:
    none -> LeakyReLU(y + b); batch -> LeakyReLU(BatchNorm(y)), exactly the derived block (its conv has no bias);
    spectral -> LeakyReLU(y / (sigma_1 ... sigma_k) + b), the derived block with every kernel divided by its largest
    singular value (``torch.nn.utils.parametrizations.spectral_norm``: sigma by one power iteration per training
    forward, 15 at construction).
    """

    def __init__(self, name: str, c_in: int, c_out: int, stride: int, norms: tuple[str, ...]):
        super().__init__()
        op = build_d_op(name, c_in, c_out, stride, "none")
        convs = [m for m in op.children() if isinstance(m, nn.Conv2d)]
        others = [m for m in op.children() if not isinstance(m, nn.Conv2d | nn.LeakyReLU)]
        if not convs or others or any(c.bias is not None for c in convs[:-1]):
            raise ValueError(f"discriminator op {name!r} is not a chain of convolutions with one final bias")
        self.norms = norms
        self.convs = nn.ModuleList(convs)
        if not {"none", "spectral"} & set(norms):
            self.convs[-1].register_parameter("bias", None)  # BatchNorm's shift makes it redundant (and unused)
        if "batch" in norms:
            self.bn = nn.BatchNorm2d(c_out)
        if "spectral" in norms:
            for i, conv in enumerate(convs):
                rows, cols = conv.weight.shape[0], conv.weight[0].numel()
                self.register_buffer(f"u{i}", F.normalize(torch.randn(rows), dim=0, eps=1e-12))
                self.register_buffer(f"v{i}", F.normalize(torch.randn(cols), dim=0, eps=1e-12))
                self._power_iteration(i, SPECTRAL_INIT_ITERATIONS)
        self.act = nn.LeakyReLU(LEAKY_SLOPE)

    @torch.no_grad()
    def _power_iteration(self, i: int, steps: int) -> None:
        matrix, u, v = self.convs[i].weight.flatten(1), getattr(self, f"u{i}"), getattr(self, f"v{i}")
        for _ in range(steps):
            u.copy_(F.normalize(matrix @ v, dim=0, eps=1e-12))
            v.copy_(F.normalize(matrix.t() @ u, dim=0, eps=1e-12))

    def _sigma(self, i: int) -> Tensor:
        if self.training:
            self._power_iteration(i, 1)
        u, v = getattr(self, f"u{i}").clone(), getattr(self, f"v{i}").clone()
        return u @ (self.convs[i].weight.flatten(1) @ v)

    def forward(self, x: Tensor) -> list[Tensor]:
        for conv in self.convs[:-1]:
            x = conv(x)
        last = self.convs[-1]
        y = F.conv2d(x, last.weight, None, last.stride, last.padding, last.dilation, last.groups)
        outputs = []
        for norm in self.norms:
            if norm == "batch":
                outputs.append(self.act(self.bn(y)))
                continue
            if norm == "spectral":
                sigma = self._sigma(0)
                for i in range(1, len(self.convs)):
                    sigma = sigma * self._sigma(i)
                z = y / sigma
            else:
                z = y
            outputs.append(self.act(z + last.bias.view(1, -1, 1, 1)))
        return outputs


class DiscriminatorSupernet(nn.Module):
    """(B, 3, H, W) in [0, 1] -> (B, 1) or (B, N) logits; a continuous relaxation of the discriminator search
    space."""

    def __init__(
        self,
        blocks: int = 8,
        base_widths: tuple[int, ...] = (64,),
        norms: tuple[str, ...] = ("batch",),
        ops: tuple[str, ...] = D_SEARCH_SPACE,
        heads: tuple[str, ...] = ("pool",),
    ):
        super().__init__()
        if blocks < 1:
            raise ValueError("a discriminator supernet needs at least one block")
        for op in ops:
            if op not in D_OPS:
                raise KeyError(f"unknown discriminator operation {op!r} in the search space; known: {', '.join(D_OPS)}")
        if not ops or len(set(ops)) != len(ops):
            raise ValueError(f"the discriminator search space must list distinct ops, got {list(ops)}")
        if not base_widths or len(set(base_widths)) != len(base_widths) or min(base_widths) < 1:
            raise ValueError(f"base widths must be distinct positive integers, got {list(base_widths)}")
        for norm in norms:
            if norm not in NORMS:
                raise ValueError(f"unknown norm {norm!r}; known: {', '.join(NORMS)}")
        if not norms or len(set(norms)) != len(norms):
            raise ValueError(f"norms must be distinct, got {list(norms)}")
        for head in heads:
            if head not in HEADS:
                raise ValueError(f"unknown head {head!r}; known: {', '.join(HEADS)}")
        if not heads or len(set(heads)) != len(heads):
            raise ValueError(f"heads must be distinct, got {list(heads)}")
        self.num_blocks, self.op_names = blocks, tuple(ops)
        self.widths, self.norms, self.heads = tuple(sorted(base_widths)), tuple(norms), tuple(heads)
        self.max_width = self.widths[-1]
        layout = block_layout(blocks, self.max_width)
        # blocks[b][o]: op o of block b, computing every candidate norm; block 0 has no normalisation.
        self.blocks = nn.ModuleList(
            nn.ModuleList(SharedNormOp(op, c_in, c_out, stride, ("none",) if b == 0 else self.norms) for op in ops)
            for b, (c_in, c_out, stride) in enumerate(layout)
        )
        c_last, hidden = layout[-1][1], HEAD_WIDTH_FACTOR * self.max_width
        if "pool" in self.heads:
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc1 = nn.Linear(c_last, hidden)
            self.act = nn.LeakyReLU(LEAKY_SLOPE)
            self.fc2 = nn.Linear(hidden, 1)
        if "patch" in self.heads:
            # Reads the width-masked last feature map, so a one-hot width is the narrower patch head's slice.
            self.patch = nn.Conv2d(c_last, 1, 1)
        self.alpha = nn.Parameter(1e-3 * torch.randn(blocks, len(ops)))
        self.alpha_width = nn.Parameter(1e-3 * torch.randn(len(self.widths)))
        self.alpha_norm = nn.Parameter(1e-3 * torch.randn(len(self.norms)))
        self.alpha_head = nn.Parameter(1e-3 * torch.randn(len(self.heads)))
        # Channels each candidate width keeps: block outputs (n_widths, blocks) and the head's hidden layer.
        kept = [[c_out for _, c_out, _ in block_layout(blocks, w)] for w in self.widths]
        self.register_buffer("block_channels", torch.tensor(kept), persistent=False)
        self.register_buffer(
            "hidden_channels", torch.tensor([HEAD_WIDTH_FACTOR * w for w in self.widths]), persistent=False
        )

    # --- parameter groups --------------------------------------------------------------------

    def arch_parameters(self) -> list[nn.Parameter]:
        return [self.alpha, self.alpha_width, self.alpha_norm, self.alpha_head]

    def weight_parameters(self) -> list[nn.Parameter]:
        arch = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in arch]

    def set_weights_trainable(self, flag: bool) -> None:
        """Freezes or unfreezes the weights only; the architecture parameters keep ``requires_grad``."""
        for p in self.weight_parameters():
            p.requires_grad_(flag)

    # --- probabilities -----------------------------------------------------------------------

    def op_probs(self) -> Tensor:  # (blocks, n_ops)
        return probabilities(self.alpha)

    def width_probs(self) -> Tensor:  # (n_widths,)
        return probabilities(self.alpha_width)

    def norm_probs(self) -> Tensor:  # (n_norms,)
        return probabilities(self.alpha_norm)

    def head_probs(self) -> Tensor:  # (n_heads,)
        return probabilities(self.alpha_head)

    # --- forward -----------------------------------------------------------------------------

    def _width_mask(self, kept: Tensor, channels: int, width_p: Tensor) -> Tensor:
        """(channels,): sum over widths of p_w * [c < kept_w]."""
        masks = (torch.arange(channels, device=kept.device)[None, :] < kept[:, None]).to(width_p.dtype)
        return width_p @ masks

    def forward(self, x: Tensor) -> Tensor:
        # Stage 2 mixes (darts_sr.search.relaxation's mixed strategy): every op of every block, weighted.
        op_p, width_p, norm_p = self.op_probs(), self.width_probs(), self.norm_probs()
        search_width = len(self.widths) > 1
        for b, ops in enumerate(self.blocks):
            per_op = [op(x) for op in ops]  # [op][norm]
            mixed = [sum(p * outputs[n] for p, outputs in zip(op_p[b], per_op)) for n in range(len(per_op[0]))]
            x = mixed[0] if len(mixed) == 1 else sum(p * m for p, m in zip(norm_p, mixed))  # (B, C_b, H_b, W_b)
            if search_width:
                x = x * self._width_mask(self.block_channels[:, b], x.shape[1], width_p).view(1, -1, 1, 1)
        outputs = []
        for head in self.heads:
            if head == "pool":
                h = self.act(self.fc1(self.pool(x).flatten(1)))  # (B, hidden)
                if search_width:
                    h = h * self._width_mask(self.hidden_channels, h.shape[1], width_p)
                outputs.append(self.fc2(h))  # (B, 1)
            else:
                outputs.append(self.patch(x).flatten(1))  # (B, H_last * W_last)
        if len(outputs) == 1:
            return outputs[0]
        return sum(p * out for p, out in zip(self.head_probs(), outputs))  # (B, N): the pool logit broadcasts

    # --- cost --------------------------------------------------------------------------------

    def macs_table(self, height: int, width: int) -> tuple[Tensor, Tensor]:
        """MACs of every choice on one ``height x width`` image.

        Returns blocks (n_widths, blocks, n_ops, n_norms) and heads (n_widths, n_heads). Entries are ``D_OPS``
        and ``head_macs`` formulas, so a one-hot choice sums to ``discriminator_macs`` of its genotype.
        """
        blocks = torch.zeros(
            len(self.widths), self.num_blocks, len(self.op_names), len(self.norms), dtype=torch.float64
        )
        head = torch.zeros(len(self.widths), len(self.heads), dtype=torch.float64)
        for i, w in enumerate(self.widths):
            h_b, w_b = height, width
            layout = block_layout(self.num_blocks, w)
            for b, (c_in, c_out, stride) in enumerate(layout):
                h_b, w_b = out_size(h_b, stride), out_size(w_b, stride)
                for o, op in enumerate(self.op_names):
                    for n, norm in enumerate(self.norms):
                        blocks[i, b, o, n] = D_OPS[op].macs(c_in, c_out, h_b, w_b, block_norm(b, norm))
            for j, name in enumerate(self.heads):
                head[i, j] = head_macs(name, layout[-1][1], h_b, w_b, w)
        return blocks, head

    def expected_macs(self, height: int = D_REFERENCE_SIZE, width: int | None = None) -> Tensor:
        """E[MACs] of the derived discriminator on one image, differentiable in the architecture parameters.

        Choices are treated as independent; for one-hot probabilities this is the derived discriminator's exact
        MACs (``discriminator_macs``).
        """
        blocks, head = self.macs_table(height, width or height)
        blocks, head = blocks.to(self.alpha), head.to(self.alpha)
        op_p, width_p, norm_p = self.op_probs(), self.width_probs(), self.norm_probs()
        return torch.einsum("w,bo,n,wbon->", width_p, op_p, norm_p, blocks) + width_p @ head @ self.head_probs()

    # --- discretisation ----------------------------------------------------------------------

    def derive(self) -> DiscriminatorGenotype:
        """The most likely discrete discriminator: the argmax op per block, the argmax width, norm and head."""
        with torch.no_grad():
            ops = self.op_probs().argmax(dim=1).tolist()
            width = self.widths[int(self.width_probs().argmax())]
            norm = self.norms[int(self.norm_probs().argmax())]
            head = self.heads[int(self.head_probs().argmax())]
        return DiscriminatorGenotype(tuple(self.op_names[o] for o in ops), base_width=width, norm=norm, head=head)

    def set_genotype(self, genotype: DiscriminatorGenotype, confidence: float = 10.0) -> None:
        """Sets architecture parameters so that ``derive()`` returns ``genotype``; it must be in the search space."""
        if len(genotype.blocks) != self.num_blocks:
            raise ValueError(f"genotype has {len(genotype.blocks)} blocks, supernet {self.num_blocks}")
        outside = sorted(set(genotype.blocks) - set(self.op_names))
        if outside:
            raise ValueError(f"ops {outside} are not in the supernet's search space {list(self.op_names)}")
        if genotype.base_width not in self.widths:
            raise ValueError(f"base width {genotype.base_width} is not a candidate {list(self.widths)}")
        if genotype.norm not in self.norms:
            raise ValueError(f"norm {genotype.norm!r} is not a candidate {list(self.norms)}")
        if genotype.head not in self.heads:
            raise ValueError(f"head {genotype.head!r} is not a candidate {list(self.heads)}")
        with torch.no_grad():
            for param in self.arch_parameters():
                param.zero_()
            for b, op in enumerate(genotype.blocks):
                self.alpha[b, self.op_names.index(op)] = confidence
            self.alpha_width[self.widths.index(genotype.base_width)] = confidence
            self.alpha_norm[self.norms.index(genotype.norm)] = confidence
            self.alpha_head[self.heads.index(genotype.head)] = confidence


def reference_macs(supernet: DiscriminatorSupernet, size: int = D_REFERENCE_SIZE) -> int:
    """MACs of the SRGAN layout (every block conv_3x3) at the supernet's widest width, with batch norm and the pool
    head when they are candidates (SRGAN's), else the first candidate norm and head."""
    norm = "batch" if "batch" in supernet.norms else supernet.norms[0]
    head = "pool" if "pool" in supernet.heads else supernet.heads[0]
    genotype = DiscriminatorGenotype(("conv_3x3",) * supernet.num_blocks, supernet.max_width, norm, head)
    return discriminator_macs(genotype, size, size)
