"""Teacher-forced drafts of the shipped SmolLM2 head at random anchors of the trainer's held-out
regenerated answers, as the reference decoder computes them (draft vocabulary, per-depth top-7),
with the target's true greedy continuation after each anchor. Under greedy verification a tree's
accepted length is the longest prefix of that continuation it holds, so any tree-building rule can
be scored exactly offline (tree_scoring_offline.py).

    python docs/bench/cpu-smollm2-probes/tree_scoring_collect.py OUT.pt [SEQS] [ANCHORS]
"""
import random
import sys

import torch

from sglang_jetspec.core.head import HeadKVCache
from sglang_jetspec.reference.decoder import ReferenceDecoder, TreeSettings
from sglang_jetspec.reference.runner import load_head_arg, resolve_model
from sglang_jetspec.reference.target import HFTarget
from sglang_jetspec.train.dataset import DEFAULT_MAX_LEN, load_sequences, split_validation

out = sys.argv[1]
n_seqs = int(sys.argv[2]) if len(sys.argv) > 2 else 155
n_anchors = int(sys.argv[3]) if len(sys.argv) > 3 else 32
W, DEPTH = 7, 15
tgt = HFTarget(resolve_model(None))
head = load_head_arg(None, tgt)
dec = ReferenceDecoder(tgt, head, TreeSettings(budget=64, width=W))
_, heldout = split_validation(load_sequences(["data/regen/smollm2"], DEFAULT_MAX_LEN), 3.0)  # train_head's split
rng = random.Random(0)
vals, ids, truth = [], [], []
with torch.no_grad():
    for k, s in enumerate(rng.sample(heldout, min(n_seqs, len(heldout)))):
        feats = tgt.forward(s.ids, tgt.new_cache(), 0, layer_ids=dec.layer_ids, logits=False).features
        positions = list(range(s.prompt_len, len(s.ids) - 1))
        for a in sorted(rng.sample(positions, min(n_anchors, len(positions)))):
            lp = dec._draft(int(s.ids[a]), a, feats[:a], torch.arange(a), HeadKVCache(head.config, 1), DEPTH)
            v, i = lp.topk(W, dim=-1)
            t = torch.full((DEPTH,), -1, dtype=torch.long)
            cont = s.ids[a + 1: a + 1 + DEPTH]
            t[: len(cont)] = cont
            vals.append(v), ids.append(i), truth.append(t)
        if k % 20 == 0:
            print(f"{k} answers, {len(vals)} anchors", flush=True)
torch.save({"vals": torch.stack(vals), "ids": torch.stack(ids), "truth": torch.stack(truth)}, out)
print(f"saved {len(vals)} anchors to {out}")
