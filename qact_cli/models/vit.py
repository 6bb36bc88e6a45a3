"""Vision transformer with the DINOv2 layout (Oquab et al. 2023, arXiv 2304.07193).

Written from the architecture facts, not from the official code; module and parameter names are
chosen so that `state_dict()` has exactly the keys and shapes of the official `*_pretrain.pth`
files (hub build: `block_chunks=0`, no registers, MLP feed-forward), so those load with
`strict=True`:

    cls_token (1,1,D)  pos_embed (1,1+G*G,D)  mask_token (1,D)  patch_embed.proj.{weight,bias}
    blocks.{i}.{norm1,attn.qkv,attn.proj,ls1.gamma,norm2,mlp.fc1,mlp.fc2,ls2.gamma}  norm.{weight,bias}

G = img_size // patch_size = 37 for the hub's img_size=518.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class PatchEmbed(nn.Module):
    """Non-overlapping p×p patches -> D-dim tokens (a stride-p convolution)."""

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if h % self.patch_size or w % self.patch_size:
            # The official PatchEmbed asserts the same; it does not crop.
            raise ValueError(f"input size {h}x{w} is not a multiple of the patch size {self.patch_size}")
        return self.proj(x).flatten(2).transpose(1, 2)  # (B, h0*w0, D), row-major over the grid


class Attention(nn.Module):
    """Multi-head self-attention; qkv output is laid out [q | k | v], each split into heads."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)  # softmax(q k^T / sqrt(d_head)) v
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))  # exact (erf) GELU


class LayerScale(nn.Module):
    """Per-channel learned scale of a residual branch (CaiT); the parameter is named `gamma`."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Block(nn.Module):
    """Pre-norm transformer block: x + ls1(attn(norm1 x)), then + ls2(mlp(norm2 x))."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.ls1 = LayerScale(dim)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.ls2 = LayerScale(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class DinoVisionTransformer(nn.Module):
    """DINOv2 ViT backbone; `forward` returns the final-LayerNormed CLS token (B, D)."""

    def __init__(
        self,
        embed_dim: int,
        depth: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        patch_size: int = 14,
        img_size: int = 518,
        interpolate_offset: float = 0.1,
        interpolate_antialias: bool = False,
    ) -> None:
        super().__init__()
        grid = img_size // patch_size
        self.embed_dim = embed_dim
        self.patch_size = patch_size
        self.interpolate_offset = interpolate_offset
        self.interpolate_antialias = interpolate_antialias
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + grid * grid, embed_dim))
        self.mask_token = nn.Parameter(torch.zeros(1, embed_dim))  # used only in DINOv2 training
        self.patch_embed = PatchEmbed(patch_size, 3, embed_dim)
        self.blocks = nn.ModuleList(Block(embed_dim, num_heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)

    def interpolate_pos_embed(self, h0: int, w0: int) -> torch.Tensor:
        """Position embedding (1, 1 + h0*w0, D) for an h0×w0 patch grid.

        Same resampling as the official `interpolate_pos_encoding`: bicubic on the G×G grid in
        float32, no antialias, and with an offset the grid is resized by *scale factor*
        (h0 + offset)/G rather than to a size, so sample positions are (i + 0.5)·G/(h0 + 0.1) - 0.5,
        not (i + 0.5)·G/h0 - 0.5. The CLS entry is kept; the stored grid is used as is when the
        input has the build size (then no resampling at all, as upstream).
        """
        pos = self.pos_embed
        n_grid = pos.shape[1] - 1
        if h0 * w0 == n_grid and h0 == w0:
            return pos
        g = math.isqrt(n_grid)
        grid = pos[:, 1:].float().reshape(1, g, g, -1).permute(0, 3, 1, 2)
        if self.interpolate_offset:
            sh = (h0 + self.interpolate_offset) / g
            sw = (w0 + self.interpolate_offset) / g
            grid = F.interpolate(grid, scale_factor=(sh, sw), mode="bicubic", antialias=self.interpolate_antialias)
        else:
            grid = F.interpolate(grid, size=(h0, w0), mode="bicubic", antialias=self.interpolate_antialias)
        assert grid.shape[-2:] == (h0, w0), (grid.shape, h0, w0)
        grid = grid.permute(0, 2, 3, 1).reshape(1, h0 * w0, -1)
        return torch.cat([pos[:, :1].float(), grid], dim=1).to(pos.dtype)

    def forward_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) normalised images -> final-normed tokens (B, 1 + h0*w0, D), CLS first."""
        h0, w0 = x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size
        tokens = self.patch_embed(x)
        tokens = torch.cat([self.cls_token.expand(tokens.shape[0], -1, -1), tokens], dim=1)
        tokens = tokens + self.interpolate_pos_embed(h0, w0)
        for block in self.blocks:
            tokens = block(tokens)
        return self.norm(tokens)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_tokens(x)[:, 0]
