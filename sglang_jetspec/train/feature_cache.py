"""The frozen target's per-sequence outputs, computed once and kept on disk.

Why: on a CPU the teacher pass (135M target forward + lm_head over the answer rows) was a third
of a training step, and it is the same every epoch. The cache holds, per training sequence,
  - the fused target features [T, K*d] (fp16; the head's `fc` is trained, so the raw taps are
    kept, not their projection), computed in fp32 exactly as the reference decoder does;
  - a compact teacher: the top-k token ids and log-probs of rows prompt_len .. T-2 (the rows a
    block can be graded against: anchors start at prompt_len, slot i >= 1 uses row a + i - 1).
Files: chunk_NNNNN_<first key>.pt (torch.save dicts, loaded memory-mapped) and cache_meta.json. Sequences
are keyed by a hash of their token ids, so the cache survives a reordering or growth of the data;
a cache is only valid for one target and one k (checked, see `open`); it serves its own tap list or
any subset of it (a head with fewer taps trains from a cache built for a head with more).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass

import torch

META_NAME = "cache_meta.json"


def sequence_key(ids: torch.Tensor) -> str:
    """Identity of a token sequence (ids [T] long)."""
    return hashlib.sha1(ids.to(torch.int64).numpy().tobytes()).hexdigest()[:20]


@dataclass
class CachedTeacher:
    """Top-k of the teacher rows prompt_len .. T-2 of one sequence."""
    first_row: int           # sequence position of row 0 (= prompt_len)
    ids: torch.Tensor        # [R, k] long
    logprobs: torch.Tensor   # [R, k] fp32, log p of those ids under the full-vocabulary teacher

    def rows(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher rows at sequence positions [m] -> (ids [m, k], logprobs [m, k])."""
        idx = positions - self.first_row
        if len(idx) and (int(idx.min()) < 0 or int(idx.max()) >= len(self.ids)):
            raise IndexError(f"teacher rows {positions.tolist()} outside the cached rows "
                             f"[{self.first_row}, {self.first_row + len(self.ids)})")
        return self.ids[idx], self.logprobs[idx]


def same_model(a: str | None, b: str | None) -> bool:
    """Two model names, or two spellings (relative, absolute, through a link) of one model folder."""
    if a == b:
        return True
    if a is None or b is None or not (os.path.isdir(a) and os.path.isdir(b)):
        return False
    return os.path.realpath(a) == os.path.realpath(b)


class FeatureCache:
    """Read side: memory-mapped chunks, looked up by sequence key."""

    def __init__(self, folder: str, layer_ids: list[int], topk: int, serve_layer_ids: list[int] | None = None):
        """layer_ids: the taps stored (and computed by build_missing); serve_layer_ids: the taps
        `get` returns, in this order, each one of layer_ids (default: all of them)."""
        self.folder, self.layer_ids, self.topk = folder, list(layer_ids), topk
        self.serve_layer_ids = list(layer_ids if serve_layer_ids is None else serve_layer_ids)
        missing = [i for i in self.serve_layer_ids if i not in self.layer_ids]
        if missing:
            raise ValueError(f"feature cache {folder} holds taps {self.layer_ids}; it cannot serve {missing}")
        self._taps = (None if self.serve_layer_ids == self.layer_ids
                      else [self.layer_ids.index(i) for i in self.serve_layer_ids])
        self._chunks: list[dict] = []
        self._where: dict[str, tuple[int, int]] = {}
        self.reload()

    @classmethod
    def open(cls, folder: str, layer_ids: list[int], topk: int, model_name: str) -> "FeatureCache":
        """Open (or create, with top-`topk`) a cache folder for this target and tap list; a folder
        made for another target, for taps that do not include every one of `layer_ids`, or holding
        fewer than `topk` teacher tokens, is refused with the values that differ. An existing cache
        keeps its own (larger or equal) k and its own taps (it serves `layer_ids` out of them)."""
        os.makedirs(folder, exist_ok=True)
        want = {"model": model_name, "layer_ids": list(layer_ids), "topk": topk}
        path = os.path.join(folder, META_NAME)
        if os.path.isfile(path):
            with open(path) as f:
                have = json.load(f)
            diff = {} if same_model(have.get("model"), model_name) else {"model": (have.get("model"), model_name)}
            stored = [int(i) for i in have.get("layer_ids") or []]
            if not set(layer_ids) <= set(stored):
                diff["layer_ids"] = (stored, f"{list(layer_ids)} (or a superset)")
            if int(have.get("topk", 0)) < topk:
                diff["topk"] = (have.get("topk"), f">= {topk}")
            if diff:
                raise ValueError(f"feature cache {folder} was built for another setting "
                                 f"(cached, wanted): {diff}; use another folder")
            return cls(folder, stored, int(have["topk"]), serve_layer_ids=list(layer_ids))
        else:
            with open(path, "w") as f:
                json.dump(want, f)
        return cls(folder, layer_ids, topk)

    def reload(self) -> None:
        names = sorted(n for n in os.listdir(self.folder) if n.startswith("chunk_") and n.endswith(".pt"))
        self._chunks, self._where = [], {}
        for c, name in enumerate(names):
            chunk = torch.load(os.path.join(self.folder, name), mmap=True, weights_only=True)
            self._chunks.append(chunk)
            for j, key in enumerate(chunk["keys"]):
                self._where[key] = (c, j)

    def __contains__(self, ids: torch.Tensor) -> bool:
        return sequence_key(ids) in self._where

    def __len__(self) -> int:
        return len(self._where)

    def get(self, ids: torch.Tensor) -> tuple[torch.Tensor, CachedTeacher]:
        """ids [T] -> (features [T, K*d] fp32 of the served taps, CachedTeacher)."""
        key = sequence_key(ids)
        if key not in self._where:
            raise KeyError(f"sequence of {len(ids)} tokens (key {key}) is not in feature cache {self.folder}")
        c, j = self._where[key]
        ch = self._chunks[c]
        f0, f1 = int(ch["feat_off"][j]), int(ch["feat_off"][j + 1])
        r0, r1 = int(ch["row_off"][j]), int(ch["row_off"][j + 1])
        if f1 - f0 != len(ids):
            raise ValueError(f"cached features hold {f1 - f0} rows for a {len(ids)}-token sequence (key {key})")
        teacher = CachedTeacher(int(ch["first_row"][j]), ch["top_ids"][r0:r1].long(), ch["top_lp"][r0:r1].float())
        feats = ch["feats"][f0:f1]
        if self._taps is not None:  # [T, K*d] -> the served taps' d-wide column blocks, in their order
            feats = feats.view(len(ids), len(self.layer_ids), -1)[:, self._taps].reshape(len(ids), -1)
        return feats.float(), teacher


@torch.no_grad()
def build_missing(cache: FeatureCache, target, seqs, chunk_size: int = 128, progress: bool = True) -> int:
    """Compute and write the entries of `seqs` the cache lacks, chunk by chunk (an interrupted
    build keeps its finished chunks). target: FrozenTarget. Returns how many were added."""
    todo, seen = [], set()
    for q in seqs:
        key = sequence_key(q.ids)
        if key not in cache._where and key not in seen:
            seen.add(key)
            todo.append((key, q))
    if not todo:
        return 0
    from tqdm import tqdm

    bar = tqdm(total=len(todo), disable=not progress, unit="seq", desc="feature cache")
    n_existing = len([n for n in os.listdir(cache.folder) if n.startswith("chunk_") and n.endswith(".pt")])
    for start in range(0, len(todo), chunk_size):
        part = todo[start:start + chunk_size]
        feats, ids, lps, foff, roff, first = [], [], [], [0], [0], []
        for key, q in part:
            rows = torch.arange(q.prompt_len, len(q.ids) - 1)  # [R] rows a block can use
            f, lp = target.features_and_teacher(q.ids, cache.layer_ids, rows)  # [T, K*d], [R, V]
            top = lp.topk(cache.topk, dim=-1)
            feats.append(f.to(torch.float16))
            ids.append(top.indices.to(torch.int32))
            lps.append(top.values.float())
            foff.append(foff[-1] + len(q.ids))
            roff.append(roff[-1] + len(rows))
            first.append(q.prompt_len)
            bar.update(1)
        chunk = {"keys": [k for k, _ in part], "feats": torch.cat(feats), "feat_off": torch.tensor(foff),
                 "top_ids": torch.cat(ids), "top_lp": torch.cat(lps), "row_off": torch.tensor(roff),
                 "first_row": torch.tensor(first)}
        # the first key in the name keeps chunks of builders running side by side (--cache-shard) apart
        path = os.path.join(cache.folder, f"chunk_{n_existing + start // chunk_size:05d}_{part[0][0][:12]}.pt")
        torch.save(chunk, path + ".tmp")
        os.replace(path + ".tmp", path)
    bar.close()
    cache.reload()
    return len(todo)
