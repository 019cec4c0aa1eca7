"""Record the head's draft top-32 per depth at every position of the target's greedy answers.

    python collect_drafts.py HEAD_DIR OUT.pt N   # first N held-out prompts of code, math, chat

(run from the repository root; 128 new tokens; the drafts for sim_trees.py)"""
import sys, torch
from sglang_jetspec.reference.target import HFTarget
from sglang_jetspec.reference.runner import resolve_model, load_head_arg
from sglang_jetspec.reference.prompts import read_prompts, encode_prompts
from sglang_jetspec.reference.ar import generate_ar

torch.set_num_threads(1)
head_dir, out, n_prompts = sys.argv[1], sys.argv[2], int(sys.argv[3])
K, NEW = 32, 128
tgt = HFTarget(resolve_model(None))
head = load_head_arg(head_dir, tgt).eval()
cfg = head.config
layer_ids = list(cfg.target_layer_ids)
vocab = head.draft_vocab
W = tgt.lm_head_weight()
res = {}
with torch.no_grad():
    for name in ("code", "math", "chat"):
        prompts = read_prompts(f"data/prompts/{name}.heldout.jsonl")[:n_prompts]
        recs = []
        for pid in encode_prompts(tgt.tokenizer, prompts):
            ans = generate_ar(tgt, pid, NEW).output_ids
            seq = torch.tensor(pid + ans)
            step = tgt.forward(seq, tgt.new_cache(), 0, layer_ids=layer_ids, logits=False)
            feats = step.features
            ctx_all = head.project_context(feats[None])
            vals, ids = [], []
            for a in range(len(pid), len(seq)):  # anchor position
                s = cfg.block_size
                block = torch.full((s,), cfg.mask_token_id); block[0] = seq[a]
                emb = tgt.embed(block)[None]
                hid = head(emb, (a + torch.arange(s))[None], ctx_all[:, :a], torch.arange(a)[None])
                rows = hid[0, 1:]
                sub = vocab.subset_logprobs(rows, W)
                v, c = sub.topk(K, dim=-1)
                vals.append(v.half()); ids.append(vocab.token_ids[c].int())
            recs.append(dict(seq=seq.int(), prompt_len=len(pid), vals=torch.stack(vals), ids=torch.stack(ids)))
            print(name, len(recs), len(ans), flush=True)
        res[name] = recs
torch.save(res, out)
