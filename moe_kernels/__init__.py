"""Triton kernels for the MoE side of JetSpec verification (each with a pure-torch reference)."""
