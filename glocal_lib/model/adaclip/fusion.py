"""Hybrid Semantic Fusion (spec 5.1): the image-level semantic from clustered top-anomalous patches.

Released version: the k' = min(N, 5K) patches with the highest anomaly probability (softmax of the
layer-mean logits) are gathered from every layer; scikit-learn KMeans(K) clusters the
layer-concatenated features per image; h = normalise(mean over clusters of the mean of the cluster's
nL * n_c vectors). Clustering is injectable (``labels``) so the arithmetic is testable exactly; gradients
flow through the gathered features only. A grid of fewer than K patches (tiny test towers only; the
released scikit-learn call refuses it) clusters into k' groups. ``hsf="reported"`` is the earlier variant left commented out in
the released code (spec 11 #2, [unsure] that it is the paper's).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F


def kmeans_labels(points: np.ndarray, k: int, seed: int) -> np.ndarray:
    """scikit-learn KMeans(k, k-means++, n_init 'auto' = 1, max_iter 300, tol 1e-4) labels, seeded.

    The released code draws the state from numpy's global RNG (seeded 111 once); a fixed state per call
    keeps runs deterministic and resumable (labels also depend on the scikit-learn version)."""
    from sklearn.cluster import KMeans

    return KMeans(n_clusters=k, n_init="auto", random_state=seed).fit_predict(points)


def torch_kmeans_labels(points: torch.Tensor, k: int, seed: int, max_iter: int = 300, tol: float = 1e-4) -> np.ndarray:
    """k-means++ then Lloyd iterations in torch (option ``kmeans: torch``): the same algorithm as
    scikit-learn's one run, without its per-call overhead; NOT bit-equal to it (other random draws)."""
    x = points.detach().double()
    gen = torch.Generator().manual_seed(int(seed))
    n = x.shape[0]
    centres = [x[int(torch.randint(n, (1,), generator=gen))]]
    for _ in range(1, k):
        d2 = torch.cdist(x, torch.stack(centres)).min(dim=1).values ** 2
        probs = d2 / d2.sum() if float(d2.sum()) > 0 else torch.full_like(d2, 1.0 / n)
        centres.append(x[int(torch.multinomial(probs.float().cpu(), 1, generator=gen))])
    c = torch.stack(centres)
    scale = float(x.var(dim=0).mean()) * tol  # scikit-learn's tolerance: relative to the data variance
    for _ in range(max_iter):
        dist = torch.cdist(x, c)
        labels = dist.argmin(dim=1)
        onehot = F.one_hot(labels, k).to(x.dtype)
        counts = onehot.sum(0)
        new = torch.where(counts[:, None] > 0, onehot.T @ x / counts.clamp_min(1)[:, None], c)
        empty = torch.nonzero(counts == 0).flatten()
        if len(empty):  # as scikit-learn: move empty clusters to the points farthest from their centres
            far = dist.gather(1, labels[:, None])[:, 0].argsort(descending=True)[:len(empty)]
            new[empty] = x[far]
        shift = float(((new - c) ** 2).sum())
        c = new
        if shift <= scale:
            break
    return torch.cdist(x, c).argmin(dim=1).cpu().numpy()


def top_patches(logits: Sequence[torch.Tensor], k: int) -> torch.Tensor:
    """Indices (B, k) of the k patches with the largest anomaly probability of the layer-mean logits."""
    prob = torch.softmax(torch.stack(list(logits), dim=1).mean(dim=1), dim=2)[:, :, 1]
    return torch.topk(prob, k=min(prob.shape[1], k), dim=1).indices


def cluster_mean(selected: Sequence[torch.Tensor], labels: np.ndarray | torch.Tensor, k: int,
                 skip_empty: bool = False) -> torch.Tensor:
    """mean over the k clusters of (mean of every layer's vectors in the cluster): (k', D) each -> (D,).

    One image; ``selected[l]`` (k', D); labels (k',). An empty cluster gives NaN (released) unless
    ``skip_empty``, which averages the non-empty clusters only.
    """
    lab = torch.as_tensor(np.asarray(labels), device=selected[0].device, dtype=torch.long)
    onehot = F.one_hot(lab, k).to(selected[0].dtype)  # (k', K)
    counts = onehot.sum(0) * len(selected)  # nL * n_c
    sums = onehot.transpose(0, 1) @ torch.stack(list(selected)).sum(0)  # (K, D)
    centres = sums / counts[:, None]
    if skip_empty:
        centres = centres[counts > 0]
    return centres.mean(0)


def hybrid_semantic_fusion(patch: Sequence[torch.Tensor], logits: Sequence[torch.Tensor], *, k_clusters: int,
                           top_factor: int = 5, seed: int = 111, skip_empty: bool = False,
                           labels: Sequence[np.ndarray] | None = None, kmeans: str = "sklearn") -> torch.Tensor:
    """h (B, D), normalised. patch[l] (B, N, D) normalised features, logits[l] (B, N, 2)."""
    idx = top_patches(logits, top_factor * k_clusters)
    gathered = [p.gather(1, idx.unsqueeze(-1).expand(-1, -1, p.shape[-1])) for p in patch]  # (B, k', D)
    out = []
    for b in range(idx.shape[0]):
        sel = [g[b] for g in gathered]
        if labels is not None:
            lab = np.asarray(labels[b])
        else:
            points = torch.cat(sel, dim=1).detach()  # (k', nL * D), in the features' dtype
            k = min(k_clusters, len(points))
            lab = torch_kmeans_labels(points, k, seed) if kmeans == "torch" else kmeans_labels(points.cpu().numpy(), k, seed)
        out.append(cluster_mean(sel, lab, min(k_clusters, idx.shape[1]), skip_empty))
    return F.normalize(torch.stack(out), dim=1)


def reported_fusion(patch: Sequence[torch.Tensor], logits: Sequence[torch.Tensor], *, k_clusters: int,
                    seed: int = 111) -> torch.Tensor:
    """The commented-out earlier HSF: cluster the layer-mean features of ALL patches, keep the centroid
    of the cluster with the highest mean anomaly probability (B, D), normalised."""
    prob = torch.softmax(torch.stack(list(logits), dim=1).mean(dim=1), dim=2)[:, :, 1]
    avg = torch.stack(list(patch), dim=0).mean(0)  # (B, N, D)
    out = []
    for b in range(avg.shape[0]):
        k = min(k_clusters, avg.shape[1])
        lab = torch.as_tensor(kmeans_labels(avg[b].detach().cpu().numpy(), k, seed), device=avg.device)
        scores = torch.stack([prob[b, lab == c].mean() if (lab == c).any() else prob.new_tensor(-1.0)
                              for c in range(k)])
        out.append(avg[b, lab == int(scores.argmax())].mean(0))
    return F.normalize(torch.stack(out), dim=1)
