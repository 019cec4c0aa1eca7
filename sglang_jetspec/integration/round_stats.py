"""What the JETSPEC worker did, counted per verify round, for benchmarks and dashboards.

The worker adds one record per decode round: the batch size, each request's tree size (nodes
including the root) and accepted length (tokens committed, bonus included), and the wall time of
the round's four phases:
  draft     head forward over [anchor, MASK...] for the whole batch (drafter.py)
  tree      best-first tree building and the verify layout (host)
  verify    the one target forward over every node
  accept    acceptance, KV compaction, head-context store (bookkeeping)
Each phase also runs under `torch.profiler.record_function("jetspec.<phase>")`, so a profile of
the scheduler (SGLang's /start_profile; `launch.profile_server`) names it; outside a profiler that
costs about 6 us per phase. The totals are cumulative since start; a reader takes two snapshots and subtracts
(`StatsDelta`). They reach HTTP clients through SGLang's /get_server_info (hooks.py, hook 5):
`internal_states[0]["jetspec"]`.

Timing needs the device idle at each phase boundary: on CPU the clock is exact as is; on a GPU
the worker synchronises only when JETSPEC_ROUND_TIMING=1 (a sync per phase costs overlap).
"""

from __future__ import annotations

import os
import time
from contextlib import contextmanager

import torch

PHASES = ("draft", "tree", "verify", "accept")
MAX_ACCEPT = 64  # histogram bins 0..MAX_ACCEPT (accepted length = depth + 1 <= block_size)


class RoundStats:
    def __init__(self, device: torch.device | str = "cpu"):
        self.rounds = 0                 # verify forwards
        self.request_rounds = 0         # sum over rounds of the batch size
        self.committed = 0              # tokens committed by verify rounds (bonus included)
        self.nodes = 0                  # tree nodes verified (roots included, padding excluded)
        self.padded_nodes = 0           # verify rows including dead padding (bs * width)
        self.accept_hist = [0] * (MAX_ACCEPT + 1)
        self.seconds = {p: 0.0 for p in PHASES}
        on_gpu = not str(device).startswith("cpu")
        self._sync = on_gpu and os.environ.get("JETSPEC_ROUND_TIMING", "0") == "1"
        self.timed = not on_gpu or self._sync
        self._extra: dict = {}

    def attach(self, name: str, snapshot_fn) -> None:
        """Add another component's snapshot (e.g. the budget policy) under `name`."""
        self._extra[name] = snapshot_fn

    @contextmanager
    def phase(self, name: str):
        """`with stats.phase("verify"): ...` adds the block's wall time to that phase."""
        if name not in self.seconds:
            raise KeyError(f"unknown phase {name!r}; expected one of {PHASES}")
        if self._sync:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        try:
            with torch.profiler.record_function(f"jetspec.{name}"):  # names the phase in profiles
                yield
        finally:
            if self._sync:
                torch.cuda.synchronize()
            self.seconds[name] += time.perf_counter() - t0

    def add_round(self, tree_sizes: list[int], accept_lens: list[int], width: int) -> None:
        """One verify round: per request its tree size and accepted length; width = rows per
        request in the verify forward (the largest tree)."""
        if len(tree_sizes) != len(accept_lens):
            raise ValueError(f"{len(tree_sizes)} tree sizes for {len(accept_lens)} accept lengths")
        self.rounds += 1
        self.request_rounds += len(accept_lens)
        self.committed += sum(accept_lens)
        self.nodes += sum(tree_sizes)
        self.padded_nodes += width * len(tree_sizes)
        for a in accept_lens:
            self.accept_hist[min(max(int(a), 0), MAX_ACCEPT)] += 1

    def snapshot(self) -> dict:
        """Plain JSON-able totals (cumulative since the server started)."""
        return {"rounds": self.rounds, "request_rounds": self.request_rounds,
                "committed": self.committed, "nodes": self.nodes, "padded_nodes": self.padded_nodes,
                "accept_hist": list(self.accept_hist), "seconds": dict(self.seconds),
                "timed": self.timed, **{k: fn() for k, fn in self._extra.items()}}


def stats_delta(before: dict, after: dict) -> dict:
    """Counters of the rounds between two snapshots, plus the derived means:
    accept_length (committed per request-round, bonus included), nodes_per_request, batch_size,
    and ms per round for each phase."""
    out = {k: after[k] - before[k] for k in ("rounds", "request_rounds", "committed", "nodes", "padded_nodes")}
    out["accept_hist"] = [a - b for a, b in zip(after["accept_hist"], before["accept_hist"])]
    out["seconds"] = {p: after["seconds"][p] - before["seconds"][p] for p in PHASES}
    rr, r = max(out["request_rounds"], 1), max(out["rounds"], 1)
    out["accept_length"] = out["committed"] / rr
    out["nodes_per_request"] = out["nodes"] / rr
    out["batch_size"] = out["request_rounds"] / r
    out["ms_per_round"] = {p: 1000 * out["seconds"][p] / r for p in PHASES}
    out["timed"] = bool(after.get("timed", False))
    return out
