"""Training sees what decoding sees: for an anchor at position a, the reference decoder's draft
(context fed round by round into the head's KV cache, as accepted paths arrive) equals the
training block of the same anchor (one pass over the whole sequence, block mask): same context
positions (< a), same rotary positions, the anchor token in slot 0, slot i graded for a + i."""

import torch

from sglang_jetspec.core.head import HeadKVCache
from sglang_jetspec.reference.decoder import ReferenceDecoder, TreeSettings
from sglang_jetspec.reference.target import HFTarget
from sglang_jetspec.train.head_init import build_head
from sglang_jetspec.train.loss import DraftForTraining, block_loss
from sglang_jetspec.train.teacher import FrozenTarget

from test_train import BLOCK, MASK, tiny_seqs, tiny_target


@torch.no_grad()
def test_decoder_draft_equals_the_training_block_for_the_same_anchor():
    torch.set_num_threads(1)
    model = tiny_target()
    head = build_head(model, num_layers=2, block_size=BLOCK, mask_token_id=MASK, init_from_target=True, seed=3)
    seq = tiny_seqs(1, answer=20)[0]
    p = seq.prompt_len
    anchors = torch.tensor([[p, p + 4, p + 9]])
    got = {}
    mod = DraftForTraining(head)
    mod.register_forward_hook(lambda m, i, o: got.__setitem__("h", o))
    target = FrozenTarget(model)
    block_loss(mod, head.config, target, [seq], anchors, torch.ones(1, 3, dtype=torch.bool))
    train_lp = torch.log_softmax(target.logits(got["h"].view(3, BLOCK, -1)[:, 1:]), -1)  # [3, S-1, V]

    hf = HFTarget.from_model(model)
    dec = ReferenceDecoder(hf, head, TreeSettings(budget=4))

    def draft_at(a, shift=0):
        """Decode the data up to anchor a in rounds of <= 3 tokens, then draft at a (+ shift)."""
        cache, head_cache = hf.new_cache(), HeadKVCache(head.config, 1)
        step = hf.forward(seq.ids[:p], cache, 0, layer_ids=dec.layer_ids, logits=False)
        feats, pos = step.features, torch.arange(p)
        at = p
        while at < a:  # a round: draft at `at`, then the target commits up to 3 tokens
            dec._draft(int(seq.ids[at]), at, feats, pos, head_cache)
            n = min(3, a - at)
            step = hf.forward(seq.ids[at:at + n], cache, at, layer_ids=dec.layer_ids, logits=False)
            feats, pos = step.features, at + torch.arange(n)
            at += n
        lp = dec._draft(int(seq.ids[a]), a + shift, feats, pos, head_cache)  # [S-1, V]
        assert head_cache.max_length() == a  # the head has seen exactly positions 0 .. a-1
        return lp

    for j, a in enumerate(anchors[0].tolist()):
        draft_lp = draft_at(a)
        assert torch.allclose(draft_lp, train_lp[j], atol=1e-4), (a, (draft_lp - train_lp[j]).abs().max())
    # the comparison can fail: the same block one rotary position off does not match
    assert not torch.allclose(draft_at(a, shift=1), train_lp[-1], atol=1e-3)
