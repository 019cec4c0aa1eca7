"""The SGLang integration of JetSpec: the only package that imports sglang.

  plugin.py        entry point SGLang calls in every process (idempotent)
  registration.py  the JETSPEC algorithm and its spec class
  server_args.py   defaults from the head config and startup validation
  head_pool.py     the head's context K/V, stored per target KV slot (survives radix hits)
  drafter.py       one head forward per round -> per-depth log-probs
  worker.py        the V2 speculative worker (extend, draft, tree verify, accept)
  sampling_accept.py  lossless acceptance of sampled rows where SGLang's verify cannot sample
  hooks.py         the one HookRegistry patch (decode KV reserve), explained
  cpu_support.py   machines without a GPU: stand-in sgl_kernel ops, tree-verify attention

Design, status and next steps: docs/sglang-integration.md.
"""
