"""The JETSPEC algorithm as SGLang sees it: a registered name, a spec class, a worker factory.

SGLang's scheduler and FutureMap call a few methods on every algorithm object that the
plugin base class `CustomSpecAlgo` does not define (carries_draft_hidden_states,
create_future_map, need_topk, get_platform_worker_cls); `JetSpecAlgo` supplies them. Every
`is_*()` stays False: claiming to be EAGLE or NGRAM would switch on their model loading,
radix keys and graph paths. JETSPEC runs without overlap scheduling (synchronous V2 loop).
"""

from __future__ import annotations

from sglang.srt.speculative.spec_info import SpeculativeAlgorithm
from sglang.srt.speculative.spec_registry import CustomSpecAlgo, get_spec

ALGORITHM_NAME = "JETSPEC"


class JetSpecAlgo(CustomSpecAlgo):
    """Capabilities of JETSPEC; the worker lives in worker.py."""

    def carries_draft_hidden_states(self) -> bool:
        return False  # no PD-disaggregation transfer of draft state (yet)

    def create_future_map(self, device, req_to_token_pool, needs_cpu_seq_lens: bool = True,
                          needs_confidence_relay: bool = False):
        from sglang.srt.managers.overlap_utils import FutureMap

        # only its prefill input_ids relay is used: JETSPEC runs the synchronous loop
        return FutureMap(device, self, req_to_token_pool, needs_cpu_seq_lens,
                         needs_confidence_relay)

    def need_topk(self) -> bool:
        return False  # no EAGLE top-k relay between rounds

    def get_platform_worker_cls(self):
        return None  # no out-of-tree platform replacement

    def has_draft_kv(self) -> bool:
        # The head's context K/V lives in the worker's own pool (head_pool.py), not in
        # SGLang's token pool, so decode needs no per-branch page rounding for draft KV.
        return False

    def handle_server_args(self, server_args) -> None:
        from sglang_jetspec.integration.server_args import apply_jetspec_server_args

        apply_jetspec_server_args(server_args)


def _worker_factory(server_args):
    from sglang_jetspec.integration.worker import JetSpecWorker

    return JetSpecWorker


def register_algorithm() -> JetSpecAlgo:
    """Register JETSPEC with SGLang once per process; later calls return the same object."""
    existing = get_spec(ALGORITHM_NAME)
    if existing is not None:
        if not isinstance(existing, JetSpecAlgo):
            raise RuntimeError(f"speculative algorithm {ALGORITHM_NAME} is already registered "
                               f"by something else ({existing!r})")
        return existing
    SpeculativeAlgorithm.register(ALGORITHM_NAME, supports_overlap=False,
                                  spec_class=JetSpecAlgo)(_worker_factory)
    return get_spec(ALGORITHM_NAME)
