"""`python -m launch.profile_server`: argument errors, and end to end on real SGLang servers."""

import pytest

from launch.profile_server import parse_args


@pytest.mark.parametrize("argv, message", [
    (["--budget", "0"], "--budget 0 must be >= 1"),
    (["--steps", "0"], "--steps 0 must be >= 1"),
    (["--prompt-index", "-1"], "--prompt-index -1 must be >= 0"),
    (["--cpu-linear", "mkl"], "invalid choice: 'mkl'"),
])
def test_bad_arguments_name_the_value(argv, message, capsys):
    with pytest.raises(SystemExit):
        parse_args(argv + ["--out", "x"])
    assert message in capsys.readouterr().err


@pytest.mark.slow
def test_profiles_plain_and_jetspec_steps(tmp_path, smollm2_dir):
    from launch.profile_server import main

    out = tmp_path / "prof"
    main(["--model", str(smollm2_dir), "--workload", "math", "--max-new-tokens", "24", "--steps", "4",
          "--out", str(out)])
    text = (out / "profile.md").read_text()
    # both servers were profiled, with their own step kinds, and the worker's phases show up
    assert "step[DECODE bs=1]" in text and "step[VERIFY bs=1]" in text
    assert text.count("`scheduler.run_batch`") == 2 and text.count("`scheduler.process_batch_result`") == 2
    for phase in ("draft", "tree", "verify", "accept"):
        assert f"`jetspec.{phase}`" in text
    assert len(list((out / "ar").glob("*.trace.json*"))) == 1
    assert len(list((out / "jetspec@8").glob("*.trace.json*"))) == 1
    rows = [line for line in text.splitlines() if line.startswith("| ar |") or line.startswith("| jetspec@8 |")]
    assert len(rows) == 2 and rows[0].split("|")[5].strip() == "-" and int(rows[1].split("|")[5]) >= 1
