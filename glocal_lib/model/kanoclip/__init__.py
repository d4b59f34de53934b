"""KAnoCLIP (Li et al., arXiv 2501.03786): a reconstruction from the paper alone (no code was released).

What the paper fixes (its § numbers): frozen OpenAI ViT-L/14@336 CLIP (§3.1); learnable normal and
abnormal prompts "[N_1..N_K] adj class" / "[A_1..A_K] adj class", K = 12 (§2.2.2, §3.1); the
knowledge-driven hinge L_KD (Eq. 2) on the mean raw text feature of LLM + VQA descriptions (Eq. 3);
CLIP-VV = AnomalyCLIP's V-V dual path (Eq. 4-8); one bi-directional cross-modal block per stage,
four stages, maps summed then normalised to [0, 1] (Eq. 9), M = G_sigma(M^a + 1 - M^n)/2 (Eq. 10);
the Conv-Adapter on the global feature (Eq. 11); S_global = softmax + max(M) (Eq. 12); L_total =
L_KD + L_global (BCE) + L_local (focal + 2 dice) with weights 1/1/1 (Eq. 13-15); training on MVTec
AD's test set for every other dataset.

What we chose ([ours] in spec/kanoclip.md, each a KAnoCLIPConfig field, default first):
  global_source      vv (final V-V CLS, ln_post @ proj) | original (AnomalyCLIP's original-stream CLS)
  vv_start_layer, feature_layers   6, (6, 12, 18, 24) on ViT-L (AnomalyCLIP); true per-layer tokens
  BiCA structure     pre-LN residual DSA -> text SA -> text-to-visual -> visual-to-text, no FFN,
                     zero-initialised outputs (identity at init); bica_heads 8, bica_dim = D
  visual_self_attention  deformable (DAT simplified: dsa_groups 4, dsa_stride 2, dsa_kernel 5,
                     dsa_offset_range 2 steps) | global
  temperature        0.07
  map_norm           softmax (2-way, M^n + M^a = 1) | minmax (per image and channel)
  adapter            adapter_dim D/4, adapter_residual false (Eq. 11 literal), default init
  global_score       mean: (p_a + max M)/2 | literal_sum (sum at inference, BCE on p_a alone)
  train_map          unsmoothed (M for max M and L_local in training) | smoothed
  sigma              4 (AnomalyCLIP's test default)
  adjectives         normal/perfect and abnormal/defective (the paper's examples)
  knowledge_source   file (the user's LLM/VQA file, knowledge.py) | template ("a photo of an abnormal {}.")
  knowledge_scope    image (class LLM + the image's VQA) | class (all VQA of the class pooled)
  knowledge_missing  error | skip (L_KD = 0 for categories without descriptions)
  placeholders       "X X ... X {adj} {class}." with '_' -> ' ', init N(0, 0.02) (CoOp/AnomalyCLIP)
  L_KD batch value   mean over images; no margin; Euclidean distances of unit vectors
  recipe             Adam 1e-3 (0.5, 0.999), 15 epochs, batch 8, seed 111 (AnomalyCLIP's; presets)
Ablation switches for Table 3: dual_path, use_bica, use_adapter, kd_weight.
"""

from ...kanoclip_config import KAnoCLIPConfig
from .bica import BiCA, ConvAdapter, DeformableSelfAttention
from .detector import KAnoCLIPDetector, kd_hinge
from .knowledge import (
    Knowledge,
    KnowledgeError,
    check_coverage,
    read_knowledge,
    standin_document,
    write_standin,
)

__all__ = [
    "BiCA",
    "ConvAdapter",
    "DeformableSelfAttention",
    "KAnoCLIPConfig",
    "KAnoCLIPDetector",
    "Knowledge",
    "KnowledgeError",
    "check_coverage",
    "kd_hinge",
    "read_knowledge",
    "standin_document",
    "write_standin",
]
