"""CPU seconds an idle SGLang scheduler burns in 20 s, with and without --sleep-on-idle.

    python docs/bench/cpu-idle-scheduler/idle_cpu.py on|off     (from the repository root)

Starts one plain SmolLM2 server with the project's own launcher (LocalServer, which passes
--sleep-on-idle on CPU; `off` removes the flag from its command), waits until it is ready, then
reads the cpu time of that server's scheduler process across 20 idle seconds.
"""

import subprocess
import sys
import time

from sglang_jetspec.integration.server_process import LocalServer, ServerSpec
from sglang_jetspec.model_store import model_path

FLAG = "--sleep-on-idle"


class CommandWithout:
    """A ServerSpec whose command leaves out one flag."""

    def __init__(self, spec: ServerSpec, flag: str):
        self.spec, self.flag = spec, flag

    def command(self, port: int) -> list[str]:
        return [c for c in self.spec.command(port) if c != self.flag]


def scheduler_cpu_s(session_id: int) -> int:
    """cpu seconds of the server's scheduler (ps shows it as `sglang::schedul`, truncated)."""
    out = subprocess.run(["ps", "--sid", str(session_id), "-o", "comm=,cputime="],
                         capture_output=True, text=True, check=True).stdout
    total = 0
    for line in out.splitlines():
        comm, cpu = line.split()
        if comm.startswith("sglang::sched"):
            h, m, s = cpu.split(":")
            total += int(h) * 3600 + int(m) * 60 + int(s)
    return total


def main(mode: str) -> None:
    if mode not in ("on", "off"):
        raise SystemExit(f"usage: idle_cpu.py on|off (got {mode!r})")
    spec = ServerSpec(str(model_path("smollm2")))
    server = LocalServer(spec if mode == "on" else CommandWithout(spec, FLAG)).start()
    try:
        server.wait_ready()
        time.sleep(3)
        before = scheduler_cpu_s(server.proc.pid)  # the server runs in its own session
        time.sleep(20)
        used = scheduler_cpu_s(server.proc.pid) - before
        print(f"{FLAG} {mode}: idle scheduler used {used} cpu-s in 20 s", flush=True)
    finally:
        server.stop()


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "")
