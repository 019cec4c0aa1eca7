"""Random draft trees as SGLang's NGRAM tree masks, shared by the stand-in op's tests."""

import torch


def random_ancestor_masks(bs: int, n: int, g: torch.Generator) -> torch.Tensor:
    """bool [bs, n, n]: row i marks node i and its ancestors; node 0 is the root and every node's
    parent has a smaller index (a random topologically ordered tree per batch row)."""
    mask = torch.zeros(bs, n, n, dtype=torch.bool)
    for b in range(bs):
        parent = [-1] + [int(torch.randint(0, i, (1,), generator=g)) for i in range(1, n)]
        for i in range(n):
            j = i
            while j >= 0:
                mask[b, i, j] = True
                j = parent[j]
    return mask
