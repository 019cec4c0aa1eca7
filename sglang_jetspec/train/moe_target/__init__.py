"""The embedded MoE target: a small Qwen3MoeForCausalLM distilled from SmolLM2-135M-Instruct.

No PyPI package ships a pretrained MoE model, so the project makes one here (CPU, about an
hour, `python -m launch.make_moe_target`). Files: `config` (architecture, the start from
SmolLM2's embeddings), `data` (batches), `losses` (distillation + balance), `distill` (the
resumable loop), `evaluate` (held-out agreement with SmolLM2), `router_stats` (is the router
learned and used?), `export` (the bf16 folder), `report` (export + README numbers).
"""
