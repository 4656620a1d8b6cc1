"""The discriminator supernet (stage 2): SRGAN's macro with a mixed op in every block.

The macro is ``darts_sr.discriminator.Discriminator``'s: ``blocks`` conv blocks, stride 2 on every second one,
widths ``base_width * 2 ** (i // 2)`` capped at 8x, no normalisation on block 0, then global average pooling ->
Linear(c_last, 16 * base_width) -> LeakyReLU(0.2) -> Linear(.., 1). Blocks are built from the discriminator op
table (``operations.discriminator.D_OPS``), the same table ``Discriminator(genotype)`` builds from.

Architecture parameters (``nn.Parameter``s in the state dict, kept apart from the weights):

- ``alpha``       (blocks, n_ops): softmax over candidate ops, per block;
- ``alpha_width`` (n_widths,): softmax over candidate base widths, for the whole network;
- ``alpha_norm``  (n_norms,): softmax over candidate normalisations (none / batch / spectral), for the whole network.

A single candidate width or norm means it is configured rather than searched (its softmax is constantly 1).

Widths are searched by channel masking (FBNetV2): the supernet is built at the widest candidate and each block's
output is multiplied by ``sum_w p_w * mask_w``, where ``mask_w`` keeps the first ``c_out(w)`` channels. For a one-hot
width this is exactly the narrower network whose weights are the leading slices of the wide ones (tested), and it
costs one wide network instead of one network per width. Norms are searched with one op set per norm in every block
(the norms need their own weights: BatchNorm's affine, spectral norm's rescaled kernel), so each extra norm adds a
full set of block ops; block 0 has no normalisation in every candidate and keeps one set.

Images are float tensors in [0, 1], (B, 3, H, W) RGB; the output is one raw logit per image, (B, 1).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from darts_sr.discriminator import (
    HEAD_WIDTH_FACTOR,
    DiscriminatorGenotype,
    block_layout,
    block_norm,
    discriminator_macs,
)
from darts_sr.relaxation import probabilities
from operations.discriminator import D_OPS, D_SEARCH_SPACE, LEAKY_SLOPE, NORMS, build_d_op, out_size

# HR patch side at which discriminator MACs are counted by default: ESRGAN's 128 x 128 training crops.
D_REFERENCE_SIZE = 128


class DiscriminatorSupernet(nn.Module):
    """(B, 3, H, W) in [0, 1] -> (B, 1) logits; a continuous relaxation of the discriminator search space."""

    def __init__(
        self,
        blocks: int = 8,
        base_widths: tuple[int, ...] = (64,),
        norms: tuple[str, ...] = ("batch",),
        ops: tuple[str, ...] = D_SEARCH_SPACE,
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
        self.num_blocks, self.op_names = blocks, tuple(ops)
        self.widths, self.norms = tuple(sorted(base_widths)), tuple(norms)
        self.max_width = self.widths[-1]
        layout = block_layout(blocks, self.max_width)
        # blocks[b][n][o]: op o of block b under norm n; block 0 has no normalisation, hence one set.
        self.blocks = nn.ModuleList(
            nn.ModuleList(
                nn.ModuleList(build_d_op(op, c_in, c_out, stride, block_norm(b, norm)) for op in ops)
                for norm in (self.norms[:1] if b == 0 else self.norms)
            )
            for b, (c_in, c_out, stride) in enumerate(layout)
        )
        c_last, hidden = layout[-1][1], HEAD_WIDTH_FACTOR * self.max_width
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Linear(c_last, hidden)
        self.act = nn.LeakyReLU(LEAKY_SLOPE)
        self.fc2 = nn.Linear(hidden, 1)
        self.alpha = nn.Parameter(1e-3 * torch.randn(blocks, len(ops)))
        self.alpha_width = nn.Parameter(1e-3 * torch.randn(len(self.widths)))
        self.alpha_norm = nn.Parameter(1e-3 * torch.randn(len(self.norms)))
        # Channels each candidate width keeps: block outputs (n_widths, blocks) and the head's hidden layer.
        kept = [[c_out for _, c_out, _ in block_layout(blocks, w)] for w in self.widths]
        self.register_buffer("block_channels", torch.tensor(kept), persistent=False)
        self.register_buffer(
            "hidden_channels", torch.tensor([HEAD_WIDTH_FACTOR * w for w in self.widths]), persistent=False
        )

    # --- parameter groups --------------------------------------------------------------------

    def arch_parameters(self) -> list[nn.Parameter]:
        return [self.alpha, self.alpha_width, self.alpha_norm]

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

    # --- forward -----------------------------------------------------------------------------

    def _width_mask(self, kept: Tensor, channels: int, width_p: Tensor) -> Tensor:
        """(channels,): sum over widths of p_w * [c < kept_w]."""
        masks = (torch.arange(channels, device=kept.device)[None, :] < kept[:, None]).to(width_p.dtype)
        return width_p @ masks

    def forward(self, x: Tensor) -> Tensor:
        # Stage 2 mixes (darts_sr.relaxation's mixed strategy): every op of every block, weighted.
        op_p, width_p, norm_p = self.op_probs(), self.width_probs(), self.norm_probs()
        search_width = len(self.widths) > 1
        for b, norm_sets in enumerate(self.blocks):
            mixed = [sum(p * op(x) for p, op in zip(op_p[b], ops)) for ops in norm_sets]
            x = mixed[0] if len(mixed) == 1 else sum(p * m for p, m in zip(norm_p, mixed))  # (B, C_b, H_b, W_b)
            if search_width:
                x = x * self._width_mask(self.block_channels[:, b], x.shape[1], width_p).view(1, -1, 1, 1)
        h = self.act(self.fc1(self.pool(x).flatten(1)))  # (B, hidden)
        if search_width:
            h = h * self._width_mask(self.hidden_channels, h.shape[1], width_p)
        return self.fc2(h)  # (B, 1)

    # --- cost --------------------------------------------------------------------------------

    def macs_table(self, height: int, width: int) -> tuple[Tensor, Tensor]:
        """MACs of every choice on one ``height x width`` image.

        Returns blocks (n_widths, blocks, n_ops, n_norms) and head (n_widths,). Entries are ``D_OPS``
        formulas, so a one-hot choice sums to ``discriminator_macs`` of its genotype.
        """
        blocks = torch.zeros(
            len(self.widths), self.num_blocks, len(self.op_names), len(self.norms), dtype=torch.float64
        )
        head = torch.zeros(len(self.widths), dtype=torch.float64)
        for i, w in enumerate(self.widths):
            h_b, w_b = height, width
            layout = block_layout(self.num_blocks, w)
            for b, (c_in, c_out, stride) in enumerate(layout):
                h_b, w_b = out_size(h_b, stride), out_size(w_b, stride)
                for o, op in enumerate(self.op_names):
                    for n, norm in enumerate(self.norms):
                        blocks[i, b, o, n] = D_OPS[op].macs(c_in, c_out, h_b, w_b, block_norm(b, norm))
            c_last, hidden = layout[-1][1], HEAD_WIDTH_FACTOR * w
            # Pool (one add per element, one divide per channel, as thop counts) and the two linear layers.
            head[i] = c_last * h_b * w_b + c_last + c_last * hidden + hidden
        return blocks, head

    def expected_macs(self, height: int = D_REFERENCE_SIZE, width: int | None = None) -> Tensor:
        """E[MACs] of the derived discriminator on one image, differentiable in the architecture parameters.

        Choices are treated as independent; for one-hot probabilities this is the derived discriminator's exact
        MACs (``discriminator_macs``).
        """
        blocks, head = self.macs_table(height, width or height)
        blocks, head = blocks.to(self.alpha), head.to(self.alpha)
        op_p, width_p, norm_p = self.op_probs(), self.width_probs(), self.norm_probs()
        return torch.einsum("w,bo,n,wbon->", width_p, op_p, norm_p, blocks) + width_p @ head

    # --- discretisation ----------------------------------------------------------------------

    def derive(self) -> DiscriminatorGenotype:
        """The most likely discrete discriminator: the argmax op per block, the argmax width and norm."""
        with torch.no_grad():
            ops = self.op_probs().argmax(dim=1).tolist()
            width = self.widths[int(self.width_probs().argmax())]
            norm = self.norms[int(self.norm_probs().argmax())]
        return DiscriminatorGenotype(tuple(self.op_names[o] for o in ops), base_width=width, norm=norm)

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
        with torch.no_grad():
            for param in self.arch_parameters():
                param.zero_()
            for b, op in enumerate(genotype.blocks):
                self.alpha[b, self.op_names.index(op)] = confidence
            self.alpha_width[self.widths.index(genotype.base_width)] = confidence
            self.alpha_norm[self.norms.index(genotype.norm)] = confidence


def reference_macs(supernet: DiscriminatorSupernet, size: int = D_REFERENCE_SIZE) -> int:
    """MACs of the SRGAN layout (every block conv_3x3) at the supernet's widest width, with batch norm when it is a
    candidate (SRGAN's), else the first candidate norm."""
    norm = "batch" if "batch" in supernet.norms else supernet.norms[0]
    genotype = DiscriminatorGenotype(("conv_3x3",) * supernet.num_blocks, supernet.max_width, norm)
    return discriminator_macs(genotype, size, size)
