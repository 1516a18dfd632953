"""``rmt-engine check STORE --bound ...`` on the committed golden regression cube: exit codes and table."""

import subprocess
import sys
from pathlib import Path

import pytest

from rmt_engine.cli import main

GOLDEN = str(Path(__file__).resolve().parent / "regression" / "golden_cube")


def test_check_holds_exit_0(capsys):
    assert main(["check", GOLDEN, "--bound", "eq67_lower_sharp", "--delta", "0.2", "--min-rate", "0.8", "--t", "auto",
                 "--where", "activation=gelu", "d1=60,240"]) == 0
    out = capsys.readouterr().out
    assert "bound eq67_lower_sharp, delta=0.2" in out and "2 holds" in out
    for col in ("d1", "holds/trials", "rate", "interval", "status"):  # only varying axes are columns
        assert col in out
    assert "40/40" in out and "[0.9119, 1.0000]" in out and "240" in out


def test_check_violated_exit_1(capsys):
    assert main(["check", GOLDEN, "--bound", "delta1", "--delta", "0.2", "--min-rate", "0.8",
                 "--where", "d1=60", "activation=gelu,tanh"]) == 1
    out = capsys.readouterr().out
    assert "violated" in out and "0/40" in out and "sigmoid" not in out


def test_check_inconclusive_exit_2(capsys):
    assert main(["check", GOLDEN, "--bound", "eq67_upper_sharp", "--delta", "0.2", "--min-rate", "0.8",
                 "--confidence", "0.99", "--where", "activation=tanh", "d1=60"]) == 2
    out = capsys.readouterr().out
    assert "inconclusive" in out and "35/40" in out and "add trials" in out


def test_check_bad_input_exit_3(capsys, tmp_path):
    assert main(["check", GOLDEN, "--bound", "eq99", "--delta", "0.2"]) == 3
    err = capsys.readouterr().err
    assert "eq67_lower_sharp" in err and "margin" in err
    assert main(["check", str(tmp_path / "nope"), "--bound", "eq69"]) == 3
    assert main(["check", GOLDEN, "--bound", "eq69", "--where", "d1=61"]) == 3


@pytest.mark.slow
def test_check_console_script_exit_code():
    r = subprocess.run([sys.executable, "-m", "rmt_engine.cli", "check", GOLDEN, "--bound", "eq69", "--min-rate",
                        "0.8"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
