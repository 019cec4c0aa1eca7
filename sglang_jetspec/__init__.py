"""JetSpec speculative decoding for SGLang.

Layout (imports flow one way, top to bottom):
  core/         engine-agnostic JetSpec pieces in pure torch (head, tree, acceptance)
  reference/    a reference decoder on Hugging Face transformers (the correctness oracle)
  train/        data regeneration and head training
  integration/  the SGLang plugin, spec class and worker (the only place importing sglang)
"""

__version__ = "0.1.0"
