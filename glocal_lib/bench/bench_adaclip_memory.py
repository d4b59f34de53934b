"""Training memory of AdaCLIP at ViT-L/14 and 518 px, measured on a CPU by counting saved activations.

No GPU needed: one training step (forward + the tensors autograd keeps for backward) is run at the
real widths (vision 1024, text 768, joint 768, 16/12 heads, 518 px = 1369 patches + 5 prompt tokens)
with a vision tower of 2 and of 4 blocks; the difference is the cost of 2 blocks, which extrapolates
the 24-block tower exactly (every block keeps the same tensors). Saved tensors are counted once per
storage. fp32 on the CPU; the fp16-autocast column halves the matmul activations but keeps the fp32
attention probabilities softmax saves (autocast runs softmax in fp32), see ``fp16_estimate``.

    python -m glocal_lib.bench.bench_adaclip_memory [--batch 1]
"""

from __future__ import annotations

import argparse
import time

import torch
from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

from glocal_lib.adaclip_config import AdaCLIPConfig
from glocal_lib.model.adaclip import AdaCLIPDetector
from glocal_lib.model.backbone import set_activation

GB = 1024**3
VIT_L = {"width": 1024, "head_width": 64, "patch_size": 14, "image_size": 336}
TEXT_L = {"context_length": 77, "vocab_size": 49408, "width": 768, "heads": 12, "layers": 12}
PARAMS_VIT_L_336 = 427_944_193  # open_clip ViT-L-14-336 parameter count (fp32 weights: 1.59 GiB)


def saved_bytes(depth: int, batch: int, size: int = 518) -> tuple[int, int]:
    """(bytes autograd saves in one training step, trainable parameter count) for a vision tower of
    ``depth`` blocks at ViT-L widths."""
    torch.manual_seed(0)
    clip = CLIP(768, vision_cfg=CLIPVisionCfg(layers=depth, **VIT_L), text_cfg=CLIPTextCfg(**TEXT_L)).eval()
    clip.requires_grad_(False)
    set_activation(clip, "gelu")
    cfg = AdaCLIPConfig(precision="fp32", feature_layers=tuple(range(1, depth + 1))[-4:] if depth >= 4 else (depth,) * 4,
                        prompt_depth=min(4, depth))
    model = AdaCLIPDetector(clip, cfg, image_size=size)
    images = torch.randn(batch, 3, size, size)
    batch_in = model.encode_image(images)
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        st = t.untyped_storage()
        seen[st.data_ptr()] = st.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        losses = model.compute_losses(batch_in, torch.ones(batch, dtype=torch.long), torch.zeros(batch, size, size),
                                      ["metal_nut"] * batch)
    del losses
    trainable = sum(p.numel() for p in model.prompt_parameters())
    return sum(seen.values()), trainable


def fp16_estimate(per_block_fp32: float, tokens: int, heads: int = 16) -> float:
    """Per-block bytes under fp16 autocast: half of everything except the attention probabilities,
    which softmax saves in fp32 (plus their fp16 copy for the probs @ v product)."""
    probs = heads * tokens * tokens * 4
    return (per_block_fp32 - probs) / 2 + probs + probs / 2


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    t0 = time.perf_counter()
    a, trainable = saved_bytes(2, args.batch)
    b, _ = saved_bytes(4, args.batch)
    per_block = (b - a) / 2
    total24 = a + 22 * per_block
    tokens = 1 + 37 * 37 + 5
    per_block16 = fp16_estimate(per_block / args.batch, tokens) * args.batch
    total24_16 = (a - 2 * per_block) / 2 + 24 * per_block16  # text and heads halved too
    weights = PARAMS_VIT_L_336 * 4
    optim = trainable * 4 * 4  # fp32 values + gradients + AdamW's two moments
    print(f"batch {args.batch}, 518 px, ViT-L/14 widths; measured in {time.perf_counter() - t0:.0f} s")
    print(f"saved activations: 2 blocks {a / GB:.2f} GiB, 4 blocks {b / GB:.2f} GiB -> {per_block / GB:.3f} GiB per block")
    print(f"24 blocks, fp32: activations {total24 / GB:.2f} GiB")
    print(f"24 blocks, fp16 autocast (estimate): activations {total24_16 / GB:.2f} GiB")
    print(f"frozen weights fp32 {weights / GB:.2f} GiB; trainable {trainable / 1e6:.2f} M params (a 4-block "
          f"tower has the same heads): values + grads + AdamW moments {optim / GB:.2f} GiB")
    for name, act in (("fp32", total24), ("fp16", total24_16)):
        print(f"training total ({name}, before allocator overhead and the CUDA context ~0.5 GiB): "
              f"{(act + weights + optim) / GB:.2f} GiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
