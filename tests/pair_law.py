"""Chi-square check that sampled (token 1, token 2) pairs, or longer tuples, follow the target's
exact joint law.

Token 1 of a request comes from SGLang's prefill sampler, token 2 from a JETSPEC verify round,
so the pair tests the speculative sampling path against the distribution the plain sampler
would draw from; in longer tuples a later token comes from the same round when that round
accepted a drafted child (or from the next round), so they also test the acceptance further
down a tree. `dist` maps fp64 logits [k, V] to the sampler's probabilities [k, V] (temperature,
top-k, top-p applied)."""

import torch


@torch.no_grad()
def exact_pair_law(model, ids: list[int], dist, top: int = 12) -> tuple[torch.Tensor, dict]:
    """(p1 [V], {(t1, t2): probability}) over the `top` likeliest first and second tokens."""
    p1 = dist(model(torch.tensor([ids])).logits[0, -1:].double())[0]
    firsts = [t for t in torch.topk(p1, top).indices.tolist() if p1[t] > 0]
    p2 = dist(model(torch.tensor([ids + [t] for t in firsts])).logits[:, -1].double())  # [k, V]
    probs = {}
    for i, t1 in enumerate(firsts):
        best = torch.topk(p2[i], top)
        for t2, q in zip(best.indices.tolist(), best.values.tolist()):
            probs[(t1, t2)] = float(p1[t1]) * q
    return p1, probs


@torch.no_grad()
def exact_sequence_law(model, ids: list[int], dist, length: int, top: int = 12, chunk: int = 32) -> dict:
    """{(t1, ..., t_length): probability} over the `top` likeliest tokens at each step."""
    probs = {(): 1.0}
    for _ in range(length):
        prefixes = list(probs)
        rows = []  # a few sequences a forward: full logits of 512 prefixes would take gigabytes
        for k in range(0, len(prefixes), chunk):
            batch = torch.tensor([ids + list(p) for p in prefixes[k:k + chunk]])
            rows.append(dist(model(batch).logits[:, -1].double()))
        rows = torch.cat(rows)
        nxt = {}
        for prefix, row in zip(prefixes, rows):
            best = torch.topk(row, min(top, row.shape[0]))
            for t, q in zip(best.indices.tolist(), best.values.tolist()):
                if q > 0:
                    nxt[prefix + (t,)] = probs[prefix] * q
        probs = nxt
    return probs


def assert_pairs_follow(pairs: list[tuple[int, int]], probs: dict, label: str, alpha: float = 1e-3) -> None:
    """Bins with >= 5 expected counts, the rest pooled; fails below `alpha`."""
    from scipy.stats import chisquare

    n = len(pairs)
    bins = [k for k, v in sorted(probs.items(), key=lambda kv: -kv[1]) if v * n >= 5]
    assert len(bins) >= 3, (f"only {len(bins)} outcomes expect >= 5 of {n} samples (largest "
                            f"probabilities {sorted(probs.values(), reverse=True)[:5]}): too spread to test")
    observed = [sum(1 for p in pairs if p == k) for k in bins]
    expected = [probs[k] * n for k in bins]
    observed.append(n - sum(observed))
    expected.append(n - sum(expected))
    stat, pvalue = chisquare(observed, expected)
    print(f"{label}: chi-square over {len(bins) + 1} bins, stat {stat:.1f}, p {pvalue:.3g}")
    assert pvalue > alpha, list(zip(bins + ["rest"], observed, [round(e, 1) for e in expected]))
