"""`launch.generate --engine sglang`: the real SGLang server as an engine with the same
interface and result format as ``ar`` and ``reference`` (reference/runner.py).

It starts a local server (JETSPEC with the given head, or plain decoding for budget 1) or talks
to one already running (``--server-url``), and sends each prompt as token ids to /generate.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from sglang_jetspec.integration.server_process import LocalServer, ServerSpec, result_from_response


class _Remote:
    """A server someone else started: only its URL."""

    def __init__(self, url: str):
        self.url = url.rstrip("/")

    def generate(self, input_ids, max_new_tokens, **sampling):
        import json
        import urllib.request

        body = json.dumps({"input_ids": input_ids, "sampling_params": {"max_new_tokens": max_new_tokens, **sampling}})
        req = urllib.request.Request(self.url + "/generate", body.encode(), {"Content-Type": "application/json"})
        return json.loads(urllib.request.urlopen(req, timeout=1800).read())

    def stop(self) -> None:
        pass


class SGLangEngine:
    def __init__(self, model_dir: str | Path, head_dir: str | Path | None, budget: int | None = None,
                 width: int | None = None, depth: int | None = None, server_url: str | None = None,
                 log_path: str | Path | None = None):
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        if server_url:
            self.server = _Remote(server_url)
        else:
            spec = ServerSpec(str(model_dir), None if budget == 1 else str(head_dir), budget=None if budget == 1 else budget,
                              width=width, depth=depth)
            self.server = LocalServer(spec, log_path).start().wait_ready()

    def generate(self, prompt_ids, max_new_tokens, temperature=0.0, top_k=-1, top_p=1.0, seed=None):
        params = {"temperature": temperature, "top_k": top_k, "top_p": top_p}
        t0 = time.perf_counter()
        resp = self.server.generate(list(prompt_ids), max_new_tokens, **params)
        return result_from_response(resp, time.perf_counter() - t0)

    def close(self) -> None:
        self.server.stop()


def head_folder(head: str | None, model_dir: str | Path) -> Path:
    """The head folder for a server: a folder, the shipped default (None), or 'random' (an
    untrained head written to a temporary folder)."""
    if head == "random":
        from sglang_jetspec.core.checkpoint import save_head
        from sglang_jetspec.reference.runner import random_head
        from sglang_jetspec.reference.target import HFTarget

        folder = Path(tempfile.mkdtemp(prefix="jetspec_random_head_"))
        save_head(random_head(HFTarget(model_dir)), str(folder))
        return folder
    if head is None:
        from sglang_jetspec.model_store import default_head_dir

        found = default_head_dir(model_dir)
        if found is None:
            raise SystemExit(f"no shipped head for {model_dir}; pass --head DIR (or --head random)")
        return found
    return Path(head)
