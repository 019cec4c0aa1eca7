"""Two CPU processes (gloo) train one head with DDP, each on its own data shard: after two steps
both ranks hold identical weights, which moved away from the start."""

import os
import socket

import torch
import torch.multiprocessing as mp
from transformers import LlamaConfig, LlamaForCausalLM

from sglang_jetspec.train.dataset import TrainSequence
from sglang_jetspec.train.head_init import build_head
from sglang_jetspec.train.teacher import FrozenTarget
from sglang_jetspec.train.trainer import TrainConfig, Trainer


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, out: str) -> None:
    from sglang_jetspec.train import distributed as dist_util

    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    info = dist_util.init_distributed("gloo")
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=61, hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4,
        num_key_value_heads=2, head_dim=8, tie_word_embeddings=True, max_position_embeddings=128)).eval()
    # a different seed per rank: DDP must broadcast rank 0's start
    head = build_head(model, num_layers=2, block_size=5, mask_token_id=3, init_from_target=False, seed=rank)
    start = {k: v.clone() for k, v in head.state_dict().items()}
    g = torch.Generator().manual_seed(5)
    seqs = [TrainSequence(torch.randint(4, 61, (20 + i,), generator=g), 6, f"p{i}") for i in range(4)]
    cfg = TrainConfig(steps=2, lr=1e-2, warmup_steps=0, anchors_per_seq=4, eval_every=0, save_every=0)
    trainer = Trainer(cfg, FrozenTarget(model), head, seqs, os.path.join(out, "ckpt"), info, progress=False)
    losses = trainer.run()
    torch.save({"head": head.state_dict(), "start": start, "losses": losses,
                "shard": [q.prompt for q in trainer.seqs]}, os.path.join(out, f"rank{rank}.pt"))
    dist_util.shutdown(info)


def test_two_gloo_ranks_end_with_identical_heads(tmp_path):
    # fork: the children reuse the imported modules (spawn re-imports transformers: minutes on 2 busy cores)
    mp.start_processes(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True, start_method="fork")
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1))
    assert set(r0["shard"]).isdisjoint(r1["shard"])  # each rank its own data
    assert r0["losses"] != r1["losses"]  # so their local losses differ
    for k, v in r0["head"].items():
        assert torch.equal(v, r1["head"][k]), k
    moved = [k for k, v in r0["head"].items() if not torch.equal(v, r0["start"][k])]
    assert "fc.weight" in moved and "layers.0.self_attn.q_proj.weight" in moved
    assert not torch.equal(r0["start"]["fc.weight"], r1["start"]["fc.weight"])  # seeds did differ
    assert (tmp_path / "ckpt" / "model.safetensors").exists()
