"""KAnoCLIP's trainable heads: the bi-directional cross-modal interaction block (Bi-CMCI, one BiCA per
stage) with its deformable visual self-attention, and the Conv-Adapter of the global feature.

The paper (§2.4, Eq. 9-11) names the components but its block diagram is not in our text; the
structure here is the spec's reconstruction (spec/kanoclip.md sections 5-6), every part marked
[ours] there:

- BiCA: pre-LayerNorm residual sub-blocks, no FFN, every output projection zero-initialised, so a
  fresh BiCA is the identity and the first maps are plain cosine maps:
  V1 = V0 + DSA(LN(V0)); T1 = T0 + SA(LN(T0)); V2 = V1 + CA(LN(V1), LN(T1));
  T2 = T1 + CA(LN(T1), LN(V1)); logits = cos(V2, T2) / tau.
- DSA (DAT, Xia et al. 2022, simplified): queries on every token, keys/values on a strided grid of
  reference points moved by learned offsets (at most ``offset_range`` reference steps), channels in
  groups that each get their own points from one shared offset network. Stride 1 with zero offsets
  is exactly global self-attention (the reference points hit the token centres).
- Conv-Adapter: ReLU(LN(x) W_down) W_up (Eq. 11; on one token the depthwise-separable convolution
  is this bottleneck), optionally with a residual.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import ConfigError


class Attention(nn.Module):
    """Multi-head attention with separate q/k/v/out projections (inner width ``inner``) and a
    zero-initialised output projection: at initialisation its output is exactly zero."""

    def __init__(self, dim: int, heads: int, inner: int | None = None) -> None:
        super().__init__()
        inner = dim if inner is None else inner
        if inner % heads:
            raise ConfigError(f"BiCA inner width {inner} is not divisible by {heads} heads (bica_heads / bica_dim)")
        self.heads = heads
        self.q = nn.Linear(dim, inner)
        self.k = nn.Linear(dim, inner)
        self.v = nn.Linear(dim, inner)
        self.out = nn.Linear(inner, dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, n, w = x.shape
        return x.reshape(b, n, self.heads, w // self.heads).transpose(1, 2)

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """softmax(q k^T d^-0.5) v per head on already projected (B, *, inner) tensors, then out."""
        q, k, v = self._split(q), self._split(k), self._split(v)
        w = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5
        o = w.softmax(dim=-1) @ v
        b, h, n, d = o.shape
        return self.out(o.transpose(1, 2).reshape(b, n, h * d))

    def forward(self, query: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        return self.attend(self.q(query), self.k(context), self.v(context))


class DeformableSelfAttention(Attention):
    """DSA of spec 5.1 on a square token grid (B, G*G, D) (input already layer-normed)."""

    def __init__(self, dim: int, heads: int, inner: int | None = None, groups: int = 4, stride: int = 2,
                 kernel: int = 5, offset_range: float = 2.0) -> None:
        super().__init__(dim, heads, inner)
        inner = self.q.out_features
        if inner % groups or dim % groups:
            raise ConfigError(f"DSA: widths {dim}/{inner} are not divisible by dsa_groups={groups}")
        if stride < 1 or kernel < 1 or kernel % 2 == 0:
            raise ConfigError(f"DSA: stride must be >= 1 and kernel odd, got stride {stride}, kernel {kernel}")
        self.groups, self.stride, self.kernel, self.offset_range = groups, stride, kernel, float(offset_range)
        c = inner // groups
        self.offset_dw = nn.Conv2d(c, c, kernel, stride=stride, padding=kernel // 2, groups=c, bias=True)
        self.offset_pw = nn.Conv2d(c, 2, 1, bias=False)  # channel 0: x (width) offset, 1: y (height)
        nn.init.zeros_(self.offset_pw.weight)

    def sample_points(self, q_grid: torch.Tensor) -> torch.Tensor:
        """Sampling points (B*groups, Gr, Gr, 2) in [-1, 1] (grid_sample's x, y order) from q (B, inner, G, G)."""
        b, c, g, _ = q_grid.shape
        o = self.offset_pw(F.gelu(self.offset_dw(q_grid.reshape(b * self.groups, c // self.groups, g, g))))
        gr = o.shape[-1]
        ref = torch.linspace(-1.0, 1.0, gr, device=o.device, dtype=o.dtype) if gr > 1 else o.new_zeros(1)
        ref_y, ref_x = torch.meshgrid(ref, ref, indexing="ij")
        step = 2.0 / max(gr - 1, 1)
        offsets = self.offset_range * step * torch.tanh(o.permute(0, 2, 3, 1))
        return (torch.stack([ref_x, ref_y], dim=-1) + offsets).clamp(-1.0, 1.0)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        b, n, d = x.shape
        g = math.isqrt(n)
        if g * g != n:
            raise ValueError(f"DSA needs a square token grid, got {n} tokens")
        q = self.q(x)
        points = self.sample_points(q.transpose(1, 2).reshape(b, -1, g, g))
        grid = x.transpose(1, 2).reshape(b * self.groups, d // self.groups, g, g)
        sampled = F.grid_sample(grid, points, mode="bilinear", padding_mode="zeros", align_corners=True)
        gr = sampled.shape[-1]
        sampled = sampled.reshape(b, d, gr * gr).transpose(1, 2)  # groups concatenated back: (B, Nr, D)
        return self.attend(q, self.k(sampled), self.v(sampled))


class BiCA(nn.Module):
    """One stage of Bi-CMCI: (patch tokens (B, N, D), text (B, 2, D)) -> cosine logits (B, N, 2)."""

    def __init__(self, dim: int, heads: int = 8, inner: int | None = None, visual_self_attention: str = "deformable",
                 dsa_groups: int = 4, dsa_stride: int = 2, dsa_kernel: int = 5, dsa_offset_range: float = 2.0,
                 temperature: float = 0.07) -> None:
        super().__init__()
        self.temperature = temperature
        if visual_self_attention == "deformable":
            self.visual_sa: Attention = DeformableSelfAttention(dim, heads, inner, dsa_groups, dsa_stride, dsa_kernel,
                                                                dsa_offset_range)
        elif visual_self_attention == "global":
            self.visual_sa = Attention(dim, heads, inner)
        else:
            raise ConfigError(f"visual_self_attention={visual_self_attention!r} is not one of ['deformable', 'global']")
        self.text_sa = Attention(dim, heads, inner)
        self.t2v = Attention(dim, heads, inner)  # patch queries over the text tokens
        self.v2t = Attention(dim, heads, inner)  # text queries over the patch tokens
        self.ln_v0, self.ln_t0 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.ln_t2v_q, self.ln_t2v_kv = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.ln_v2t_q, self.ln_v2t_kv = nn.LayerNorm(dim), nn.LayerNorm(dim)

    def interact(self, v0: torch.Tensor, t0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(V2, T2): the refined patch tokens (B, N, D) and text tokens (B, 2, D)."""
        x = self.ln_v0(v0)
        v1 = v0 + self.visual_sa(x, x)
        t = self.ln_t0(t0)
        t1 = t0 + self.text_sa(t, t)
        v2 = v1 + self.t2v(self.ln_t2v_q(v1), self.ln_t2v_kv(t1))
        t2 = t1 + self.v2t(self.ln_v2t_q(t1), self.ln_v2t_kv(v1))
        return v2, t2

    def forward(self, patch: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        v2, t2 = self.interact(patch, text)
        v2 = v2 / v2.norm(dim=-1, keepdim=True)
        t2 = t2 / t2.norm(dim=-1, keepdim=True)
        return v2 @ t2.transpose(1, 2) / self.temperature


class ConvAdapter(nn.Module):
    """Eq. 11: ReLU(LN(x) W_down) W_up (+ x with ``residual``); PyTorch default init (W_up non-zero)."""

    def __init__(self, dim: int, bottleneck: int, residual: bool = False) -> None:
        super().__init__()
        self.residual = residual
        self.ln = nn.LayerNorm(dim)
        self.down = nn.Linear(dim, bottleneck)
        self.up = nn.Linear(bottleneck, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.up(F.relu(self.down(self.ln(x))))
        return x + y if self.residual else y
