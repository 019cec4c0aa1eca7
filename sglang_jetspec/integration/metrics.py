"""JETSPEC's Prometheus gauges, next to SGLang's own on /metrics (with --enable-metrics).

SGLang exports metrics from its scheduler process through prometheus_client's multiprocess
mode (PROMETHEUS_MULTIPROC_DIR, set up before the scheduler starts); gauges created in the
scheduler process with multiprocess_mode="mostrecent" reach the HTTP server's /metrics the
same way SGLang's do. Updated once per decode round from what the worker already has on the
host (no extra device sync).

  sglang:jetspec_verify_width        the last step's width (its node budget per request; trees
                                     of requests near their end may be smaller)
  sglang:jetspec_nodes_per_request   real tree nodes per request of the last round
  sglang:jetspec_accept_length       tokens committed per request of the last round
  sglang:jetspec_calibration_error   expected calibration error of the acceptance model
  sglang:jetspec_rounds              decode rounds since start
"""

from __future__ import annotations

NAMES = ("verify_width", "nodes_per_request", "accept_length", "calibration_error", "rounds")
_DOCS = {
    "verify_width": "Node budget per request of the last JETSPEC step (static: the server budget).",
    "nodes_per_request": "Real draft-tree nodes per request in the last JETSPEC round, root included.",
    "accept_length": "Tokens committed per request in the last JETSPEC round, bonus token included.",
    "calibration_error": "Expected calibration error of the JETSPEC acceptance model (adaptive width).",
    "rounds": "JETSPEC decode rounds since the server started.",
}


class JetSpecMetrics:
    def __init__(self, model_name: str = ""):
        from prometheus_client import Gauge

        self.labels = {"model_name": model_name}
        self.gauges = {n: Gauge(name=f"sglang:jetspec_{n}", documentation=_DOCS[n],
                                labelnames=list(self.labels), multiprocess_mode="mostrecent")
                       for n in NAMES}

    def update(self, width: int, tree_sizes: list[int], accept_lens: list[int], rounds: int,
               calibration_error: float | None) -> None:
        bs = max(len(tree_sizes), 1)
        values = {"verify_width": width, "nodes_per_request": sum(tree_sizes) / bs,
                  "accept_length": sum(accept_lens) / bs, "rounds": rounds}
        if calibration_error is not None:
            values["calibration_error"] = calibration_error
        for name, v in values.items():
            self.gauges[name].labels(**self.labels).set(float(v))


def maybe_metrics(server_args) -> JetSpecMetrics | None:
    """The gauges when the server runs with --enable-metrics, else None."""
    if not getattr(server_args, "enable_metrics", False):
        return None
    return JetSpecMetrics(str(getattr(server_args, "served_model_name", None) or getattr(server_args, "model_path", "")))
