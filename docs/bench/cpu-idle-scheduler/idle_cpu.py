"""CPU seconds an idle SGLang scheduler burns in 20 s, with and without --sleep-on-idle.

    python docs/bench/cpu-idle-scheduler/idle_cpu.py on|off     (from the repository root)

Starts one plain SmolLM2 server through the tests' harness (which passes --sleep-on-idle; `off`
strips the flag), waits until it is ready, then reads the scheduler process's cpu time across
20 idle seconds.
"""
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, "tests")
import server_harness as H
from sglang_jetspec.model_store import model_path

def sched_cpu():
    """cpu seconds of every running SGLang scheduler process (ps truncates the name)."""
    tot = 0.0
    out = subprocess.run(["ps", "-e", "-o", "pid=,ppid=,comm=,cputime="], capture_output=True, text=True).stdout
    for line in out.splitlines():
        _pid, _ppid, comm, cpu = line.split(None, 3)
        if comm.startswith("sglang::sched"):
            h, m, s = cpu.strip().split(":")
            tot += int(h) * 3600 + int(m) * 60 + int(s)
    return tot

model = model_path("smollm2")
tmp = Path(tempfile.mkdtemp())
flag = sys.argv[1]
if flag == "off":  # drop the flag to compare
    real_popen = subprocess.Popen
    def popen(cmd, *a, **k):
        if isinstance(cmd, list) and "--sleep-on-idle" in cmd:
            cmd = [c for c in cmd if c != "--sleep-on-idle"]
        return real_popen(cmd, *a, **k)
    H.subprocess.Popen = popen
s = H.Server(model, tmp / f"idle_{flag}.log")
s.wait_ready(time.time() + 600)
time.sleep(3)
c0 = sched_cpu(); time.sleep(20); c1 = sched_cpu()
print(f"--sleep-on-idle {flag}: idle scheduler used {c1 - c0:.0f} cpu-s in 20 s", flush=True)
s.kill()
