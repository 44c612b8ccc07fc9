"""k-winners-take-all codes, their similarities, and the random binarisers FlyVec is compared with (post 8).

Su Jianlin, "一个二值化词向量模型，是怎么跟果蝇搭上关系的？" (kexue.fm/archives/8159), on Liang et al., "Can a Fruit Fly
Learn Word Embeddings?" (ICLR 2021, arXiv 2101.06887). A *k-hot code* is a boolean vector of length K with exactly
k ones: the fly's "high dimension, low activity" representation, produced by keeping the k largest of K
activations (APL inhibition, :func:`kwta`). Two binarisers of dense vectors frame it:

- **FlyHash** (Dasgupta et al., *Science* 2017): a fixed random sparse 0/1 expansion to K > D units, then top-k
  (:func:`flyhash_projection`, :func:`flyhash`).
- **SimHash / LSH** (sign random projections): ``sign(x G)`` with Gaussian G, about half the bits on;
  ``Pr[bit differs] = angle(x, y) / pi`` (:func:`simhash_projection`, :func:`simhash`).

Similarities between codes (:func:`overlap`, :func:`pairwise_overlap`, :func:`jaccard`, :func:`hamming`) are all
functions of the overlap when both codes have k ones: Jaccard = o / (2k - o) and Hamming = 2(k - o).
Fast paths have slow twins here (:func:`kwta_reference`, :func:`pairwise_overlap_reference`).
"""

import math

import torch

# --------------------------------------------------------------------------------------------------------------
# k-winners-take-all
# --------------------------------------------------------------------------------------------------------------


def _check_k(k: int, n: int, name: str = "k") -> None:
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= n:
        raise ValueError(f"{name} must be an int in [1, {n}] (the number of units), got {k!r}")


def kwta(h: torch.Tensor, k: int) -> torch.Tensor:
    """k-winners-take-all: a boolean code with ones at the k largest activations of each row.

    Ties at the k-th place are broken by ``torch.topk`` (exactly k ones always; which tied unit wins is
    unspecified), unlike the official code's midpoint threshold (:func:`kwta_reference`), which keeps every tie.

    Args:
        h: activations ``[..., K]``, floating point.
        k: number of winners, ``1 <= k <= K``.

    Returns:
        bool ``[..., K]`` with exactly ``k`` True per row.
    """
    if h.dim() == 0:
        raise ValueError("h must have at least one dimension (the K units), got a scalar")
    _check_k(k, h.shape[-1])
    idx = h.topk(k, dim=-1, sorted=False).indices
    return torch.zeros(h.shape, dtype=torch.bool, device=h.device).scatter_(-1, idx, True)


def kwta_reference(h: torch.Tensor, k: int) -> torch.Tensor:
    """Slow twin of :func:`kwta`, the official inference rule: threshold at the midpoint between the k-th and the
    (k+1)-th largest activation (everything above is on). Equal to :func:`kwta` when there are no ties there.

    Args:
        h: ``[..., K]``; k: ``1 <= k <= K``.
    """
    _check_k(k, h.shape[-1])
    s = h.sort(dim=-1, descending=True).values
    if k == h.shape[-1]:
        return torch.ones(h.shape, dtype=torch.bool, device=h.device)
    threshold = 0.5 * (s[..., k - 1] + s[..., k])
    return h > threshold.unsqueeze(-1)


def code_indices(codes: torch.Tensor) -> torch.Tensor:
    """The sorted positions of the ones of k-hot codes: ``[..., K]`` bool -> ``[..., k]`` int64.

    Raises:
        ValueError: if the rows do not all have the same number of ones.
    """
    counts = codes.sum(-1)
    if counts.numel() and not bool((counts == counts.reshape(-1)[0]).all()):
        raise ValueError("codes must all have the same number of ones to be stored as index lists")
    k = int(counts.reshape(-1)[0]) if counts.numel() else 0
    # A stable sort of ~codes puts the True positions first, in increasing order.
    order = torch.sort((~codes).to(torch.uint8), dim=-1, stable=True).indices
    return order[..., :k]


def index_bits(n_units: int, k: int) -> int:
    """Bits to store one k-hot code as k indices of ceil(log2 K) bits each."""
    _check_k(k, n_units)
    return k * max(1, math.ceil(math.log2(n_units)))


# --------------------------------------------------------------------------------------------------------------
# Similarities between codes
# --------------------------------------------------------------------------------------------------------------


def _check_codes(a: torch.Tensor, b: torch.Tensor) -> None:
    if a.dtype != torch.bool or b.dtype != torch.bool:
        raise TypeError(f"codes must be bool tensors, got {a.dtype} and {b.dtype}")
    if a.shape[-1] != b.shape[-1]:
        raise ValueError(f"codes must have the same length K, got {a.shape[-1]} and {b.shape[-1]}")


def overlap(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Number of shared ones, row by row (broadcasting): ``[..., K]`` x ``[..., K]`` -> int64 ``[...]``."""
    _check_codes(a, b)
    return (a & b).sum(-1)


def jaccard(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """|a AND b| / |a OR b| row by row (0 where both codes are empty); float32 ``[...]``."""
    _check_codes(a, b)
    inter = (a & b).sum(-1)
    union = (a | b).sum(-1)
    return torch.where(union > 0, inter / union.clamp_min(1), torch.zeros((), device=a.device))


def hamming(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Number of differing bits row by row: int64 ``[...]``."""
    _check_codes(a, b)
    return (a ^ b).sum(-1)


def pairwise_overlap(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Overlap of every code of ``a`` with every code of ``b``: ``[N, K]`` x ``[M, K]`` -> int64 ``[N, M]``.

    One float32 matmul (exact: counts stay far below 2^24).
    """
    _check_codes(a, b)
    if a.dim() != 2 or b.dim() != 2:
        raise ValueError(f"a and b must be 2-D [N, K] and [M, K], got {tuple(a.shape)} and {tuple(b.shape)}")
    return (a.float() @ b.float().T).round_().long()


def pairwise_overlap_reference(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Slow twin of :func:`pairwise_overlap`: Python set intersections of the index lists."""
    _check_codes(a, b)
    sets_a = [set(torch.nonzero(row).flatten().tolist()) for row in a]
    sets_b = [set(torch.nonzero(row).flatten().tolist()) for row in b]
    return torch.tensor([[len(x & y) for y in sets_b] for x in sets_a], dtype=torch.long).reshape(len(a), len(b))


# --------------------------------------------------------------------------------------------------------------
# Random binarisers of dense vectors
# --------------------------------------------------------------------------------------------------------------


def flyhash_projection(dim: int, n_units: int, n_inputs: int, *, generator: torch.Generator | None = None,
                       device: str | torch.device = "cpu") -> torch.Tensor:
    """FlyHash's random sparse 0/1 expansion: each of ``n_units`` units samples ``n_inputs`` distinct inputs.

    Args:
        dim: input dimension D.
        n_units: output units K (the fly expands, K > D, but this is not enforced).
        n_inputs: inputs per unit, ``1 <= n_inputs <= D`` (the fly's Kenyon cells sample ~6 of 50 glomeruli).

    Returns:
        float32 ``[D, K]`` of 0/1 with exactly ``n_inputs`` ones per column.
    """
    _check_k(n_inputs, dim, "n_inputs")
    if n_units < 1:
        raise ValueError(f"n_units must be >= 1, got {n_units}")
    scores = torch.rand(n_units, dim, generator=generator, device=device)
    idx = scores.topk(n_inputs, dim=1).indices  # a uniform random n_inputs-subset per unit
    proj = torch.zeros(n_units, dim, device=device).scatter_(1, idx, 1.0)
    return proj.T.contiguous()


def flyhash(x: torch.Tensor, projection: torch.Tensor, k: int) -> torch.Tensor:
    """FlyHash codes ``kwta(x @ projection, k)``: ``[..., D]`` -> bool ``[..., K]``.

    Dasgupta et al. mean-centre the inputs first; do that before calling if the data are not centred.
    """
    if x.shape[-1] != projection.shape[0]:
        raise ValueError(f"x has dimension {x.shape[-1]} but the projection expects {projection.shape[0]}")
    return kwta(x.to(projection.dtype) @ projection, k)


def simhash_projection(dim: int, n_bits: int, *, generator: torch.Generator | None = None,
                       device: str | torch.device = "cpu") -> torch.Tensor:
    """Gaussian random projection for SimHash: float32 ``[D, n_bits]`` with i.i.d. N(0, 1/D) entries."""
    if dim < 1 or n_bits < 1:
        raise ValueError(f"dim and n_bits must be >= 1, got {dim} and {n_bits}")
    return torch.randn(dim, n_bits, generator=generator, device=device) / math.sqrt(dim)


def simhash(x: torch.Tensor, projection: torch.Tensor) -> torch.Tensor:
    """SimHash codes ``x @ projection > 0``: ``[..., D]`` -> bool ``[..., n_bits]`` (about half the bits on)."""
    if x.shape[-1] != projection.shape[0]:
        raise ValueError(f"x has dimension {x.shape[-1]} but the projection expects {projection.shape[0]}")
    return (x.to(projection.dtype) @ projection) > 0
