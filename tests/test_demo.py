"""The README's main job runs end to end on the embedded default (a very short version)."""

import pytest

from launch.demo import main as demo_main


def test_demo_runs_and_matches(capsys, smollm2_dir):
    demo_main(["--engine", "reference", "--num-prompts", "1", "--max-new-tokens", "6", "--budget", "8"])
    out = capsys.readouterr().out
    assert "accept length" in out and "speedup" in out
    assert " yes" in out  # greedy outputs matched plain decoding


@pytest.mark.slow
def test_main_job_through_the_real_servers(capsys, smollm2_dir):
    """`make demo` itself: two real SGLang servers (plain and JETSPEC with the shipped head)."""
    demo_main(["--num-prompts", "2", "--max-new-tokens", "24", "--budget", "16"])
    out = capsys.readouterr().out
    assert "accept length" in out and "speedup" in out
    rows = [ln for ln in out.splitlines() if ln.rstrip().endswith((" yes", " NO"))]
    assert len(rows) == 2 and all(r.rstrip().endswith("yes") for r in rows), out
