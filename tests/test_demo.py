"""The README's main job runs end to end on the embedded default (a very short version)."""

from launch.demo import main as demo_main


def test_demo_runs_and_matches(capsys, smollm2_dir):
    demo_main(["--num-prompts", "1", "--max-new-tokens", "6", "--budget", "8"])
    out = capsys.readouterr().out
    assert "accept length" in out and "speedup" in out
    assert " yes" in out  # greedy outputs matched plain decoding
