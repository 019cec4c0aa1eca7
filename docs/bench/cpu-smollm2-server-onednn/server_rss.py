"""Resident memory of a SmolLM2 scheduler process, PyTorch F.linear vs packed oneDNN linear layers.

    python docs/bench/cpu-smollm2-server-onednn/server_rss.py torch,onednn LOG_DIR

For each backend, a plain server and a JETSPEC@8 server (one at a time): /proc status of the
scheduler (the largest process of the server's session) after startup (SGLang's health check has
run one forward, so weights are packed) and after 8 greedy requests of 24 tokens, 4 in flight.
"""
import os, sys, time, subprocess
from sglang_jetspec.integration.server_process import LocalServer, ServerSpec
from concurrent.futures import ThreadPoolExecutor
model = os.environ["JETSPEC_CACHE_DIR"] + "/smollm2"
def rss(pid):
    out = {}
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(("VmRSS", "RssAnon", "RssFile", "VmHWM")):
            k, v = line.split(":"); out[k] = int(v.split()[0]) // 1024
    return out
def sched_pid(server):
    kids = subprocess.run(["pgrep", "-s", str(server.proc.pid)], capture_output=True, text=True).stdout.split()
    best = None
    for k in kids:
        try:
            name = open(f"/proc/{k}/cmdline").read()
            r = rss(k)["VmRSS"]
        except OSError:
            continue
        if best is None or r > best[1]: best = (k, r, name[:60])
    return best[0]
ids = list(range(1000, 1100))
for lin in sys.argv[1].split(","):
    for head in (None, "models/smollm2-135m-jetspec"):
        with LocalServer(ServerSpec(model, head=head, budget=8 if head else None), f"{sys.argv[2]}/mem_{lin}_{bool(head)}.log", env={"SGLANG_JETSPEC_CPU_LINEAR": lin}) as s:
            pid = sched_pid(s)
            r0 = rss(pid)
            with ThreadPoolExecutor(4) as ex:
                list(ex.map(lambda i: s.generate(ids[i:] , 24, temperature=0), range(8)))
            r1 = rss(pid)
            print(lin, "jetspec" if head else "ar", "idle", r0, "after", r1, flush=True)
