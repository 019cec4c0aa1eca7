"""The frozen target as training sees it: one no-grad pass per sequence gives both the fused
features the head reads and the teacher's next-token log-probs, from the very same prefix.

Target layer L is the OUTPUT of decoder layer L (transformers' hidden_states[L + 1]), as in
reference/target.py. The teacher's lm_head runs only on the rows the loss needs (an answer's
positions, shared by all the blocks that overlap there), not on the whole sequence.
"""

from __future__ import annotations

import torch


class FrozenTarget:
    """Embeddings, lm_head and the feature/teacher pass of a transformers causal LM (no grads)."""

    def __init__(self, model, memo: int = 0):
        """memo: keep the last `memo` feature/teacher results, so heads trained in lockstep on
        the same batches (Trainer companions) share one target pass per sequence."""
        self.model = model.eval()
        self.memo_size = memo
        self._memo: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}
        for p in model.parameters():
            p.requires_grad_(False)
        cfg = model.config
        self.num_layers: int = cfg.num_hidden_layers
        self.hidden_size: int = cfg.hidden_size
        self.embed_tokens = model.get_input_embeddings()
        self.lm_head = model.get_output_embeddings()
        self.vocab_size: int = self.lm_head.weight.shape[0]

    @property
    def device(self) -> torch.device:
        return self.lm_head.weight.device

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.embed_tokens(ids)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Head hidden states [..., d] -> fp32 logits [..., V] through the target's lm_head."""
        return self.lm_head(hidden).float()

    @torch.no_grad()
    def features_and_teacher(self, ids: torch.Tensor, layer_ids: list[int],
                             teacher_rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """ids [T] -> (features [T, K*d], teacher log-probs [R, V] fp32 at positions teacher_rows [R]).

        Row r of the teacher is p(. | ids[: teacher_rows[r] + 1]): the distribution of the token
        at position teacher_rows[r] + 1.
        """
        self._check_layers(layer_ids)
        key = self._memo_key(ids, layer_ids, teacher_rows)
        if key in self._memo:
            return self._memo[key]
        result = self._features_and_teacher(ids, layer_ids, teacher_rows)
        self._remember([key], [result])
        return result

    @torch.no_grad()
    def features_and_teacher_batch(self, ids_list: list[torch.Tensor], layer_ids: list[int],
                                   rows_list: list[torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """features_and_teacher for several sequences in ONE target forward (right-padded: a
        causal model's real positions never see the padding after them). What a GPU wants: one
        launch sequence instead of one per sequence. Memoised per sequence like the single call."""
        self._check_layers(layer_ids)
        keys = [self._memo_key(ids, layer_ids, rows) for ids, rows in zip(ids_list, rows_list)]
        if all(k in self._memo for k in keys):
            return [self._memo[k] for k in keys]
        padded = torch.nn.utils.rnn.pad_sequence(list(ids_list), batch_first=True).to(self.device)  # [b, T]
        out = self.model.base_model(input_ids=padded, output_hidden_states=True, use_cache=False)
        feats = torch.cat([out.hidden_states[i + 1] for i in layer_ids], dim=-1)  # [b, T, K*d]
        results = []
        for j, (ids, rows) in enumerate(zip(ids_list, rows_list)):
            last = out.last_hidden_state[j, rows.to(self.device)]
            results.append((feats[j, : len(ids)], torch.log_softmax(self.lm_head(last).float(), dim=-1)))
        self._remember(keys, results)
        return results

    def _check_layers(self, layer_ids: list[int]) -> None:
        bad = [i for i in layer_ids if not 0 <= i < self.num_layers]
        if bad:
            raise ValueError(f"target layer ids {bad} out of range [0, {self.num_layers})")

    def _memo_key(self, ids: torch.Tensor, layer_ids: list[int], rows: torch.Tensor) -> tuple | None:
        """Identity of one pass (None when not memoising: never found, never stored)."""
        if not self.memo_size:
            return None
        return (ids.data_ptr(), ids.numel(), tuple(layer_ids), rows.numel(), hash(tuple(rows.tolist())))

    def _remember(self, keys: list, results: list) -> None:
        if not self.memo_size:
            return
        for k, r in zip(keys, results):
            self._memo[k] = r
        while len(self._memo) > self.memo_size:
            self._memo.pop(next(iter(self._memo)))  # oldest first (dicts keep insertion order)

    def _features_and_teacher(self, ids, layer_ids, teacher_rows):
        out = self.model.base_model(input_ids=ids.view(1, -1).to(self.device), output_hidden_states=True,
                                    use_cache=False)
        feats = torch.cat([out.hidden_states[i + 1][0] for i in layer_ids], dim=-1)  # [T, K*d]
        last = out.last_hidden_state[0, teacher_rows.to(self.device)]  # [R, d], after the final norm
        return feats, torch.log_softmax(self.lm_head(last).float(), dim=-1)
