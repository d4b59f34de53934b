"""AdaCLIPDetector: frozen CLIP (exact GELU) + hybrid static/dynamic prompts in both towers (spec 2-6).

Image-based (``feature_source = "images"``): its visual prompts change every vision output, so the
engine hands it images plus the cached un-prompted embedding f0 (``static_features``), never frozen
features. Submodule names follow the released ``AdaCLIP`` module (``text_prompter.static_prompts.j``,
``patch_token_layer.head.l`` ...), so a released checkpoint maps onto ``state_dict`` keys one to one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from glocal_lib.adaclip_config import AdaCLIPConfig
from glocal_lib.errors import ConfigError, WeightsError
from glocal_lib.io import read_yaml
from glocal_lib.model import scoring
from glocal_lib.model.backbone import feature_layers_for
from glocal_lib.model.detector import FrozenTowerDetector, Prediction
from glocal_lib.model.images import ImageBatch
from glocal_lib.model.losses import dice_loss, focal_loss
from glocal_lib.model.prompts import tokenize
from glocal_lib.model.text import encode_prompts

from .fusion import hybrid_semantic_fusion, reported_fusion
from .tower import PromptedVisionTower

# spec 4.1 (released adaclip.py:TextEmbebddingLayer)
NORMAL_STATES = ("{}", "flawless {}", "perfect {}", "unblemished {}", "{} without flaw", "{} without defect",
                 "{} without damage")
ANOMALY_STATES = ("damaged {}", "broken {}", "{} with flaw", "{} with defect", "{} with damage")
TEMPLATES = ("a bad photo of a {}.", "a low resolution photo of the {}.", "a bad photo of the {}.",
             "a cropped photo of the {}.")
RELEASED_PREFIX = "clip_model."  # key prefix of the released trainer's saved state dict
CLASS_NAMES_FILE = Path(__file__).with_name("class_names.yaml")
# parameter groups the released optimiser collects by name (trainer.py learnable_paramter_list)
TRAINABLE = ("text_prompter", "visual_prompter", "patch_token_layer", "cls_token_layer",
             "dynamic_visual_prompt_generator", "dynamic_text_prompt_generator")


def sentences(name: str, ensemble: str = "released") -> tuple[list[str], list[str]]:
    """(28 normal, 20 anomalous) sentences for class name ``name`` ('-' -> ' ', as released), state-major;
    ensemble "minimal": the first state and template only (1 + 1, the smoke shortcut)."""
    name = name.replace("-", " ")
    cut = 1 if ensemble == "minimal" else None
    templates = TEMPLATES[:cut]
    make = [[t.format(s.format(name)) for s in states[:cut] for t in templates] for states in (NORMAL_STATES, ANOMALY_STATES)]
    return make[0], make[1]


@lru_cache(maxsize=1)
def _class_name_table() -> dict[str, dict[str, str]]:
    return {str(k): {str(a): str(b) for a, b in (v or {}).items()} for k, v in read_yaml(CLASS_NAMES_FILE).items()}


def adaclip_class_name(dataset: str | None, category: str) -> str:
    """AdaCLIP's prompt name for a project category of ``dataset`` (class_names.yaml; else unchanged)."""
    return _class_name_table().get(str(dataset), {}).get(category, category)


def _normalise(x: torch.Tensor) -> torch.Tensor:
    """x / ||x|| keeping x's dtype (the released in-place ``/=``; fp16 values under autocast)."""
    return (x / x.norm(dim=-1, keepdim=True)).to(x.dtype)


def _linear(fan_in: int, fan_out: int, gen: torch.Generator) -> nn.Linear:
    """nn.Linear with PyTorch's default init ranges, drawn from ``gen`` (reproducible per seed)."""
    lin = nn.Linear(fan_in, fan_out)
    bound = fan_in ** -0.5
    with torch.no_grad():
        lin.weight.uniform_(-bound, bound, generator=gen)
        lin.bias.uniform_(-bound, bound, generator=gen)
    return lin


class Heads(nn.Module):
    """``head``: a list of Linear layers (released ProjectLayer)."""

    def __init__(self, fan_in: int, fan_out: int, count: int, gen: torch.Generator) -> None:
        super().__init__()
        self.head = nn.ModuleList([_linear(fan_in, fan_out, gen) for _ in range(count)])


class Prompter(nn.Module):
    """``static_prompts``: J tensors (Lp, width), N(0, std) (released PromptLayer); none if disabled."""

    def __init__(self, depth: int, length: int, width: int, std: float, gen: torch.Generator, enabled: bool) -> None:
        super().__init__()
        tensors = []
        for _ in range(depth if enabled else 0):
            t = torch.empty(length, width)
            t.normal_(0.0, std, generator=gen)
            tensors.append(nn.Parameter(t))
        self.static_prompts = nn.ParameterList(tensors)


class AdaCLIPParameters(nn.Module):
    """Every trained tensor, under the released module names (``clip_model.<name>...`` in its files)."""

    def __init__(self, **parts: nn.Module) -> None:
        super().__init__()
        for name in TRAINABLE:
            self.add_module(name, parts[name])


class AdaCLIPDetector(FrozenTowerDetector):
    """AdaCLIP on a frozen open_clip CLIP whose MLPs use ``cfg.activation`` (see module docstring)."""

    feature_source = "images"

    def __init__(self, clip: nn.Module, cfg: AdaCLIPConfig, *, backbone: str | None = None,
                 weights: str | None = None, image_size: int | None = None, seed: int = 0,
                 backbone_seed: int = 0) -> None:
        super().__init__()
        if getattr(clip, "glocal_activation", None) != cfg.activation:
            raise ConfigError(f"AdaCLIP runs its tower with activation {cfg.activation!r}; load it with "
                              f"load_clip(..., activation={cfg.activation!r}) (build_model does)")
        depth = self._freeze_clip(clip, cfg, backbone, weights, seed, backbone_seed)
        layers = feature_layers_for(cfg.feature_layers or None, depth)
        self.vision = PromptedVisionTower(clip.visual, layers, image_size, cfg.pos_resize)
        if cfg.visual_prompts and cfg.prompt_depth > depth:
            raise ConfigError(f"adaclip prompt_depth={cfg.prompt_depth} exceeds the {depth} vision blocks")
        width = int(clip.visual.conv1.out_channels)
        text_width = int(clip.ln_final.weight.shape[0])
        dim = int(clip.visual.proj.shape[1])
        j, lp = cfg.prompt_depth, cfg.prompt_length
        gen = torch.Generator().manual_seed(int(seed))  # released creation order (AdaCLIP.__init__)
        self.prompts = AdaCLIPParameters(
            text_prompter=Prompter(j, lp, text_width, cfg.prompt_init_std, gen, cfg.text_prompts and cfg.static),
            visual_prompter=Prompter(j, lp, width, cfg.prompt_init_std, gen, cfg.visual_prompts and cfg.static),
            patch_token_layer=Heads(width, dim, len(layers), gen),
            cls_token_layer=Heads(dim, dim, 1, gen),
            dynamic_visual_prompt_generator=Heads(dim, width, lp if cfg.dynamic else 0, gen),
            dynamic_text_prompt_generator=Heads(dim, text_width, lp if cfg.dynamic else 0, gen))
        self.deep = None  # Model API: every trained tensor is in ``prompts``
        self._ids: dict[str, torch.Tensor] = {}
        self._n_normal = 0
        self.to(next(clip.parameters()).device)

    # ---- Model API attributes -------------------------------------------------------------------
    @property
    def prompt_names(self) -> tuple[str, ...]:
        return ("normal", "anomaly")

    def prompt_parameters(self) -> list[nn.Parameter]:
        """Every trainable tensor (the released optimiser's six name groups), in module order."""
        return list(self.prompts.parameters())

    def make_optimizer(self, lr: float | None = None) -> torch.optim.Optimizer:
        """The released AdamW (lr 0.01, betas (0.5, 0.999), decoupled weight decay 0.01)."""
        return torch.optim.AdamW(self.prompt_parameters(), lr=self.cfg.lr if lr is None else lr,
                                 betas=tuple(self.cfg.adam_betas), eps=1e-8, weight_decay=self.cfg.weight_decay)

    def autocast(self) -> contextlib.AbstractContextManager:
        """fp16/bf16 autocast on CUDA only: the released forward is decorated with torch.cuda.amp.autocast,
        which does nothing on a CPU (fp32 there)."""
        if self.cfg.precision == "fp32" or self.device.type != "cuda":
            return contextlib.nullcontext()
        return torch.autocast("cuda", dtype=torch.float16 if self.cfg.precision == "fp16" else torch.bfloat16)

    def vision_signature(self) -> dict[str, object]:
        """What the cacheable static features depend on (besides backbone, weights, image size)."""
        return {"method": "adaclip", "static": "f0 = ln_post(CLS) @ proj of the un-prompted tower",
                "activation": self.cfg.activation, "pos_resize": self.cfg.pos_resize,
                "precision": self.cfg.precision if self.device.type == "cuda" else "fp32"}

    def class_name(self, dataset: str | None, category: str) -> str:
        """The prompt's class name for a category of ``dataset`` (cfg.class_names)."""
        if self.cfg.class_names == "object":
            return "object"
        return adaclip_class_name(dataset, category) if self.cfg.class_names == "adaclip" else category

    # ---- images ---------------------------------------------------------------------------------
    @torch.no_grad()
    def static_features(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """{"f0": (B, D)}: the frozen un-prompted image embedding feeding the dynamic prompts."""
        with self.autocast():
            f0, _ = self.vision(images.to(self.device))
        return {"f0": f0}

    def encode_image(self, images: torch.Tensor) -> ImageBatch:
        """The model's input for ``images``: the images and their static features."""
        return ImageBatch(images.to(self.device), self.static_features(images))

    def _dynamic(self, f0: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        if not self.cfg.dynamic:
            return None, None
        dv = torch.stack([lin(f0) for lin in self.prompts.dynamic_visual_prompt_generator.head], dim=1)
        dt = torch.stack([lin(f0) for lin in self.prompts.dynamic_text_prompt_generator.head], dim=1)
        return dv, dt

    def _hybrid(self, prompter: Prompter, dynamic: torch.Tensor | None, b: int, depths: range) -> list[torch.Tensor]:
        out = []
        for j in depths:
            static = prompter.static_prompts[j].unsqueeze(0).expand(b, -1, -1) if self.cfg.static else None
            out.append(static if dynamic is None else dynamic if static is None else dynamic + static)
        return out

    def _token_ids(self, name: str) -> torch.Tensor:
        if name not in self._ids:
            normal, anomalous = sentences(name, self.cfg.ensemble)
            self._n_normal = len(normal)
            context = int(self.clip.positional_embedding.shape[0])
            self._ids[name] = torch.stack([tokenize(s, context) for s in normal + anomalous])
        return self._ids[name]

    def text_features(self, class_names: Sequence[str], dynamic: torch.Tensor | None) -> torch.Tensor:
        """T (B, D, 2) = per image [normal, anomaly] state embeddings (spec 4.3); dynamic (B, Lp, Wt)."""
        b = len(class_names)
        ids = torch.cat([self._token_ids(n) for n in class_names]).to(self.device)
        per = ids.shape[0] // b
        deep = None
        if self.cfg.text_prompts:
            deep = [p.repeat_interleave(per, dim=0) for p in self._hybrid(self.prompts.text_prompter, dynamic, b,
                                                                           range(1, self.cfg.prompt_depth))]
        feats = _normalise(encode_prompts(self.clip, self.clip.token_embedding(ids), ids, deep,
                                          self.cfg.prompt_fp16_rounding))
        n_normal = self._n_normal
        feats = feats.reshape(b, per, -1)
        states = [_normalise(feats[:, :n_normal].mean(1)), _normalise(feats[:, n_normal:].mean(1))]
        return F.normalize(torch.stack(states, dim=2), dim=1)

    def text_embeddings(self, class_name: str | None = None) -> torch.Tensor:
        """(2, D) float32 (normal, anomaly) for ``class_name`` (default "object") with f0 = 0, i.e. static
        prompts plus the generators' biases: the prompts' image-independent part (for the epoch log)."""
        dim = int(self.clip.visual.proj.shape[1])
        with self.autocast():
            _, dt = self._dynamic(torch.zeros(1, dim, device=self.device))
            t = self.text_features([class_name or "object"], dt)
        return t[0].transpose(0, 1).float()

    def forward_features(self, batch: ImageBatch, class_names: Sequence[str]
                         ) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
        """(c (B, D), P_l (B, N, D) per layer, T (B, D, 2)), all normalised (spec 3.3, 4.3)."""
        images = batch.images.to(self.device)
        f0 = batch.static["f0"].to(self.device) if "f0" in batch.static else self.static_features(images)["f0"]
        if len(class_names) != len(images):
            raise ValueError(f"{len(class_names)} class names for {len(images)} images")
        dv, dt = self._dynamic(f0)
        prompts = self._hybrid(self.prompts.visual_prompter, dv, len(images), range(self.cfg.prompt_depth)) \
            if self.cfg.visual_prompts else None
        glob, tokens = self.vision(images, prompts, self.cfg.prompt_fp16_rounding)
        patch = [_normalise(lin(t)) for lin, t in zip(self.prompts.patch_token_layer.head, tokens)]
        cls = _normalise(self.prompts.cls_token_layer.head[0](glob))
        return cls, patch, self.text_features(class_names, dt)

    def _scores(self, batch: ImageBatch, class_names: Sequence[str], labels: Sequence | None = None
                ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(p_img (B, 2), upsampled per-layer logits (B, 2, S, S) each)."""
        cfg = self.cfg
        cls, patch, text = self.forward_features(batch, class_names)
        scale = 1.0 / cfg.temperature
        logits = [scale * p @ text for p in patch]  # (B, N, 2)
        u = cls
        if cfg.use_hsf:
            if cfg.hsf == "released":
                h = hybrid_semantic_fusion(patch, logits, k_clusters=cfg.k_clusters, top_factor=cfg.hsf_top_factor,
                                           seed=cfg.kmeans_seed, skip_empty=cfg.hsf_skip_empty, labels=labels,
                                           kmeans=cfg.kmeans)
            else:
                h = reported_fusion(patch, logits, k_clusters=cfg.k_clusters, seed=cfg.kmeans_seed)
            u = F.normalize(cfg.hsf_alpha * h + (1 - cfg.hsf_alpha) * cls, dim=1)
        p_img = torch.softmax(scale * (u.unsqueeze(1) @ text).squeeze(1), dim=1)
        b, g, s = len(cls), self.grid, self.image_size
        up = [F.interpolate(z.permute(0, 2, 1).reshape(b, 2, g, g), size=(s, s), mode="bilinear", align_corners=True)
              for z in logits]
        return p_img, up

    @torch.no_grad()
    def predict(self, batch: ImageBatch, sigma: float | None = None, class_names: Sequence[str] | None = None,
                cluster_labels: Sequence | None = None) -> Prediction:
        """Test-time aggregation (spec 5.3): softmax of the mean upsampled logits, anomaly channel; sigma 4."""
        names = list(class_names) if class_names is not None else ["object"] * len(batch)
        with self.autocast():
            p_img, up = self._scores(batch, names, cluster_labels)
        q = torch.softmax(torch.stack(up).mean(0).float(), dim=1)
        maps = (q[:, 1] + 1 - q[:, 0]) / 2
        layer_maps = torch.stack([torch.softmax(z.float(), dim=1)[:, 1] for z in up], dim=1)
        maps = scoring.gaussian_blur(maps, self.cfg.sigma if sigma is None else sigma)
        return Prediction(p_img[:, 1].float(), maps, layer_maps)

    def _dice(self, probs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.cfg.dice_reduction == "rows":  # released B = 1: targets.size(0) = S rows are the batch
            return dice_loss(probs.reshape(-1, probs.shape[-1]), target.reshape(-1, target.shape[-1]))
        return dice_loss(probs, target)

    def compute_losses(self, batch: ImageBatch, labels: torch.Tensor, masks: torch.Tensor,
                       class_names: Sequence[str] | None = None, cluster_labels: Sequence | None = None
                       ) -> dict[str, torch.Tensor]:
        """global = focal loss of p_img (not CE); local = sum over layers of focal + dice(anomaly) +
        dice(normal) of the per-layer softmax maps; total = global + local (spec 6)."""
        names = list(class_names) if class_names is not None else ["object"] * len(batch)
        masks = masks.to(self.device, torch.float32)
        if masks.shape[-2:] != (self.image_size, self.image_size):
            raise ValueError(f"masks of size {tuple(masks.shape[-2:])}, model image size {self.image_size}")
        with self.autocast():
            p_img, up = self._scores(batch, names, cluster_labels)
        gamma = self.cfg.focal_gamma
        cls = focal_loss(p_img.float(), labels.to(self.device).long(), gamma)
        seg = focal = dice = p_img.new_zeros((), dtype=torch.float32)
        for z in up:
            q = torch.softmax(z.float(), dim=1)
            f, d_a, d_n = focal_loss(q, masks, gamma), self._dice(q[:, 1], masks), self._dice(q[:, 0], 1 - masks)
            seg = seg + (f + d_a + d_n)  # the released order of additions
            focal, dice = focal + f, dice + d_a + d_n
        return {"global": cls, "local": seg, "focal": focal, "dice": dice, "gcl": torch.zeros_like(seg),
                "total": cls + seg}

    # ---- the released checkpoint format (hooks of glocal_lib.model.checkpoint) ----------------
    # The released trainer saves a flat state dict: ``clip_model.<module>.<...>`` for the six trained
    # module groups (spec 13), loaded non-strictly there; here every tensor of ours must be present.
    @staticmethod
    def recognises_official(state: dict) -> bool:
        return any(str(k).startswith(f"{RELEASED_PREFIX}{TRAINABLE[2]}.") for k in state)

    @staticmethod
    def official_config(state: dict, source: str = "checkpoint") -> dict:
        """Config fields implied by a released file: prompting length and depth (the rest are shapes)."""
        visual = sorted(k for k in state if str(k).startswith(f"{RELEASED_PREFIX}visual_prompter.static_prompts."))
        out: dict = {"method": "adaclip"}
        if visual:
            out.update(prompt_depth=len(visual), prompt_length=int(state[visual[0]].shape[0]))
        return out

    @staticmethod
    def check_official(cfg: AdaCLIPConfig) -> None:
        """Every AdaCLIP config has the released format (its tensors are the released modules)."""

    def official_checkpoint(self) -> dict:
        return {f"{RELEASED_PREFIX}{k}": v.detach().cpu().clone() for k, v in self.prompts.state_dict().items()}

    def load_official(self, obj: dict, source: str) -> None:
        own = self.prompts.state_dict()
        state = {str(k)[len(RELEASED_PREFIX):]: v for k, v in obj.items() if str(k).startswith(RELEASED_PREFIX)}
        missing = sorted(set(own) - set(state))
        wrong = sorted(k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape))
        if missing or wrong:
            raise WeightsError(f"{source}: not an AdaCLIP checkpoint for this model (missing {missing[:4]}, wrong "
                               f"shapes {wrong[:4]}); build it with the backbone and prompt settings it was trained with")
        with torch.no_grad():
            for k, v in self.prompts.state_dict(keep_vars=True).items():
                v.copy_(state[k].to(dtype=v.dtype, device=v.device))
