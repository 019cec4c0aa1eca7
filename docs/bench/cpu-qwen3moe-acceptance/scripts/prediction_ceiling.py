"""How far can an expert prediction keyed on tokens go? For every node of a recorded trace, the
top-k experts per layer of a table built from the WHOLE trace itself (in sample, so an upper
bound for the key) keyed by the node's token, by (parent token, token), and by (grandparent,
parent, token), against the experts it was routed to; and the online predictor's own recall as
the server recorded it (`predicted` in the trace).

    python docs/bench/cpu-qwen3moe-acceptance/scripts/prediction_ceiling.py TRACE NUM_EXPERTS
"""
import collections
import sys

import torch

from sglang_jetspec.bench.expert_replay import load_trace

rounds, E = load_trace(sys.argv[1]), int(sys.argv[2])
L, K = rounds[0].routed[0].shape[1:]
keys = {"token": lambda t, p, g: t, "(parent, token)": lambda t, p, g: (p, t),
        "(grandparent, parent, token)": lambda t, p, g: (g, p, t)}
tables = {name: collections.defaultdict(lambda: torch.zeros(L, E)) for name in keys}
nodes, online_hit = [], torch.zeros(L)


def one_hot(ids):
    return torch.zeros(L, E + 1).scatter_(1, torch.where(ids >= 0, ids, E), 1.0)[:, :E]


for r in rounds:
    for t, routed, predicted in zip(r.trees, r.routed, r.predicted):
        toks, par = t.tokens.tolist(), t.parents.tolist()
        for v in range(t.n):
            p = toks[par[v]] if par[v] >= 0 else -1
            g = toks[par[par[v]]] if par[v] >= 0 and par[par[v]] >= 0 else -1
            hot = one_hot(routed[v])
            for name, key in keys.items():
                tables[name][key(toks[v], p, g)] += hot
            nodes.append((toks[v], p, g, hot))
            online_hit += (one_hot(predicted[v]) * hot).sum(1)
print(f"# {sys.argv[1]}: {len(nodes)} nodes, {L} layers, top-{K} of {E}; recall per layer (= precision: k experts each)")
def fmt(x):
    return " ".join(f"{float(v):.3f}" for v in x)


print(f"online predictor (as recorded): {fmt(online_hit / (K * len(nodes)))}")
for name, key in keys.items():
    hit = torch.zeros(L)
    for t, p, g, hot in nodes:
        best = tables[name][key(t, p, g)].topk(K, 1).indices
        hit += (torch.zeros(L, E).scatter_(1, best, 1.0) * hot).sum(1)
    print(f"in-sample table keyed by {name}: {fmt(hit / (K * len(nodes)))}")
