"""Build an engine (``ar`` or ``reference``) from command-line style options."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from sglang_jetspec.reference.ar import generate_ar
from sglang_jetspec.reference.target import HFTarget


@dataclass
class AREngine:
    target: HFTarget

    @property
    def tokenizer(self):
        return self.target.tokenizer

    def generate(self, prompt_ids, max_new_tokens, **sampling):
        return generate_ar(self.target, prompt_ids, max_new_tokens, **sampling)


@dataclass
class ReferenceEngine:
    decoder: "object"

    @property
    def tokenizer(self):
        return self.decoder.target.tokenizer

    def generate(self, prompt_ids, max_new_tokens, **sampling):
        return self.decoder.generate(prompt_ids, max_new_tokens, **sampling)


def resolve_model(model: str | None) -> Path:
    from sglang_jetspec.model_store import model_path

    return Path(model) if model else model_path("smollm2")


def random_head(target: HFTarget, seed: int = 0, num_layers: int = 1):
    """An UNTRAINED head shaped for ``target``: useless as a drafter, for losslessness checks."""
    from sglang_jetspec.core.head import DraftHead
    from sglang_jetspec.core.head_config import HeadConfig

    cfg = HeadConfig.for_target(
        target_hidden_size=target.hidden_size, target_num_layers=target.num_layers,
        vocab_size=target.vocab_size, num_layers=num_layers,
        mask_token_id=default_mask_token_id(target.tokenizer),
    )
    torch.manual_seed(seed)
    return DraftHead(cfg)


def default_mask_token_id(tokenizer) -> int:
    """A special token the target never emits in answers, used as the head's MASK input."""
    for tok in ("<|mask|>", "<mask>", "<empty_output>", "<filename>"):
        tid = tokenizer.convert_tokens_to_ids(tok)
        if isinstance(tid, int) and tid != tokenizer.unk_token_id and tid is not None:
            return tid
    raise ValueError("target tokenizer has no special token usable as the mask token; set one in the head config")


def load_head_arg(head: str | None, target: HFTarget, seed: int = 0, draft_vocab: bool = True,
                  pair_prior: bool = True):
    from sglang_jetspec.core.checkpoint import load_head
    from sglang_jetspec.model_store import default_head_dir

    if head == "random":
        return random_head(target, seed)
    if head is None:
        head = default_head_dir(target.model_dir)
        if head is None:
            raise ValueError(
                f"no shipped draft head for target {target.model_dir}; pass --head DIR "
                "(or --head random for an untrained head, useful only for losslessness checks)"
            )
    return load_head(head, device=str(target.device), dtype=target.dtype, draft_vocab=draft_vocab,
                     pair_prior=pair_prior)


def build_engine(args):
    target = HFTarget(resolve_model(args.model), device=args.device)
    if args.engine == "ar":
        return AREngine(target)
    from sglang_jetspec.reference.decoder import ReferenceDecoder, TreeSettings

    head = load_head_arg(args.head, target, seed=args.seed, draft_vocab=getattr(args, "draft_vocab", "on") == "on",
                         pair_prior=getattr(args, "pair_prior", "on") == "on")
    settings = TreeSettings(budget=args.budget, width=args.width, depth=args.depth)
    return ReferenceEngine(ReferenceDecoder(target, head, settings))
