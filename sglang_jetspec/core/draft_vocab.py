"""A draft vocabulary: the head scores only a subset of the target's tokens.

The head's lm_head over the full vocabulary is most of a draft's cost on CPU (15 depth rows x
49152 tokens x 576 for SmolLM2: ~50 ms of a ~220 ms round at batch 1) and grows with the batch.
Scoring only the tokens the target actually writes (the most frequent ones in its own answers)
cuts that several-fold. It is lossless by construction: the draft only proposes, the target
verifies every node; a token outside the subset can still be committed, as the bonus token or
through sampling, it just cannot be drafted.

Stored as an optional file beside the head (`draft_vocab.safetensors`, one int32 tensor
`token_ids`, sorted, unique) so the published layout (config.json + model.safetensors) stays as it
is and other loaders never see it. The log-probs are normalised over the subset and returned at
full vocabulary width with -inf outside it, so the tree builder and every caller stay unchanged.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable

import torch

from sglang_jetspec.core.packed_linear import PackedWeight, cpu_linear_backend, packed_linear
from sglang_jetspec.core.row_linear import row_linear

FILE_NAME = "draft_vocab.safetensors"
TENSOR_NAME = "token_ids"


class DraftVocab:
    def __init__(self, token_ids: torch.Tensor | list[int]):
        ids = torch.as_tensor(token_ids, dtype=torch.long).flatten()
        if ids.numel() == 0:
            raise ValueError("a draft vocabulary needs at least one token id")
        if bool((ids[1:] <= ids[:-1]).any()):
            raise ValueError("draft vocabulary token ids must be sorted and unique")
        if int(ids[0]) < 0:
            raise ValueError(f"draft vocabulary token id {int(ids[0])} is negative")
        self.token_ids = ids
        self._rows: dict[tuple, torch.Tensor] = {}  # lm_head rows per (weight, device, dtype)
        self._packed: PackedWeight | None = None  # CPU fp32: those rows packed (repacked if they change)
        self.use_packed: bool | None = None  # None: as $JETSPEC_CPU_LINEAR says (core/packed_linear.py)
        self._ids: dict[torch.device, torch.Tensor] = {}

    def __len__(self) -> int:
        return int(self.token_ids.numel())

    def check(self, vocab_size: int, width: int | None = None) -> list[str]:
        """Problems of this vocabulary for a target of `vocab_size` tokens and trees of `width`."""
        errs = []
        top = int(self.token_ids[-1])
        if top >= vocab_size:
            errs.append(f"draft vocabulary holds token id {top}, outside the target's vocabulary of {vocab_size}")
        if width is not None and len(self) < width:
            errs.append(f"draft vocabulary of {len(self)} tokens is smaller than the tree width {width}")
        return errs

    # ---- scoring --------------------------------------------------------------------------

    def lm_head_rows(self, weight: torch.Tensor) -> torch.Tensor:
        """weight[token_ids] as one contiguous matrix [n, d], made once per weight."""
        key = (weight.data_ptr(), weight.device, weight.dtype, tuple(weight.shape))
        rows = self._rows.get(key)
        if rows is None:
            rows = weight.detach().index_select(0, self.ids_on(weight.device)).contiguous()
            self._rows = {key: rows}  # one target per process: keep only the latest
        return rows

    def logprobs(self, hidden: torch.Tensor, weight: torch.Tensor, vocab_size: int) -> torch.Tensor:
        """Draft log-probs [..., vocab_size] (fp32) normalised over the subset, -inf elsewhere.
        hidden [..., d]; weight the target's lm_head [V(+pad), d]."""
        out = torch.full((*hidden.shape[:-1], vocab_size), float("-inf"), device=hidden.device)
        out[..., self.ids_on(hidden.device)] = self.subset_logprobs(hidden, weight)
        return out

    def subset_logprobs(self, hidden: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """Draft log-probs over the subset only, [..., n] fp32 (column j scores token_ids[j])."""
        rows = self.lm_head_rows(weight)
        packed = self.use_packed if self.use_packed is not None else cpu_linear_backend() == "onednn"
        if packed and rows.device.type == "cpu" and rows.dtype == torch.float32:
            if self._packed is None:
                self._packed = PackedWeight(rows)
            sub = packed_linear(hidden, self._packed, weight=rows).float()  # core/packed_linear.py
        else:
            sub = row_linear(hidden, rows).float()  # see row_linear.py
        return torch.log_softmax(sub, dim=-1)

    def ids_on(self, device) -> torch.Tensor:
        """token_ids on `device`, copied there once (no host-to-device copy per draft)."""
        device = torch.device(device)
        ids = self._ids.get(device)
        if ids is None:
            ids = self._ids[device] = self.token_ids.to(device)
        return ids

    # ---- files ----------------------------------------------------------------------------

    def save(self, folder: str) -> str:
        from safetensors.torch import save_file

        path = os.path.join(folder, FILE_NAME)
        save_file({TENSOR_NAME: self.token_ids.to(torch.int32).contiguous()}, path)
        return path

    @classmethod
    def load(cls, folder: str) -> "DraftVocab | None":
        """The folder's draft vocabulary, or None when it has none. ValueError on a bad file."""
        path = os.path.join(folder, FILE_NAME)
        if not os.path.isfile(path):
            return None
        from safetensors.torch import load_file

        try:
            tensors = load_file(path)
        except Exception as e:  # a truncated or foreign file
            raise ValueError(f"{path}: not a readable safetensors file ({e})") from e
        if set(tensors) != {TENSOR_NAME}:
            raise ValueError(f"{path}: expected one tensor {TENSOR_NAME!r}, found {sorted(tensors)}")
        try:
            return cls(tensors[TENSOR_NAME])
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from e


def reference_logprobs(hidden: torch.Tensor, weight: torch.Tensor, vocab_size: int,
                       token_ids: torch.Tensor) -> torch.Tensor:
    """Plain reference of DraftVocab.logprobs: full logits, -inf outside the subset, log_softmax."""
    logits = torch.matmul(hidden, weight[:vocab_size].t()).float()
    keep = torch.zeros(vocab_size, dtype=torch.bool, device=hidden.device)
    keep[token_ids.to(hidden.device)] = True
    return torch.log_softmax(logits.masked_fill(~keep, float("-inf")), dim=-1)


def most_frequent(sequences: Iterable[list[int]], size: int, always: Iterable[int] = ()) -> tuple[DraftVocab, Counter]:
    """The `size` most frequent token ids of `sequences` (ties: lower id first) plus `always`
    (e.g. the end-of-sequence ids), as a DraftVocab; also returns the counts."""
    if size < 1:
        raise ValueError(f"draft vocabulary size {size} must be >= 1")
    counts = Counter()
    for seq in sequences:
        counts.update(seq)
    ranked = sorted(counts, key=lambda t: (-counts[t], t))
    chosen = set(ranked[:size]) | {int(t) for t in always}
    return DraftVocab(sorted(chosen)), counts


def coverage(vocab: DraftVocab, sequences: Iterable[list[int]]) -> float:
    """Share of the tokens of `sequences` that lie in the vocabulary (0 when there are none)."""
    keep = set(vocab.token_ids.tolist())
    hit = total = 0
    for seq in sequences:
        total += len(seq)
        hit += sum(1 for t in seq if t in keep)
    return hit / total if total else 0.0
