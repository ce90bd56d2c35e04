"""Both command lines: every subcommand's help renders, without loading torch, and user errors are one line."""
import subprocess
import sys
from pathlib import Path

import pytest

from handwriting_hm import cli as handwriting_cli
from lm import cli as lm_cli

PROGRAMS = [(handwriting_cli.main, handwriting_cli.COMMANDS), (lm_cli.main, lm_cli.COMMANDS)]


@pytest.mark.parametrize("main, commands", PROGRAMS)
def test_every_help_renders(main, commands, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    top = capsys.readouterr().out
    for name in commands:
        assert name in top
        with pytest.raises(SystemExit) as exit_info:
            main([name, "--help"])
        assert exit_info.value.code == 0
        assert "usage:" in capsys.readouterr().out


# every subcommand parses before it loads these: its parser is built from modules without them (the trainers' from
# the config modules, whose presets and flags need no torch), and the rest is imported when it runs
HEAVY = ("torch", "matplotlib", "gradio")
EVERY_COMMAND = sorted({("handwriting_hm", name) for name in handwriting_cli.COMMANDS}
                       | {("lm", name) for name in lm_cli.COMMANDS})


@pytest.mark.parametrize("program, name", EVERY_COMMAND)
def test_help_loads_no_torch_matplotlib_or_gradio(program, name):
    check = (f"import sys\nfrom {program}.cli import main\ntry:\n    main([{name!r}, '--help'])\n"
             f"except SystemExit:\n    pass\nprint([m for m in {HEAVY!r} if m in sys.modules])")
    result = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=60,
                            cwd=Path(__file__).resolve().parents[1])
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_no_command_prints_help_and_fails(capsys):
    assert handwriting_cli.main([]) == 2
    assert "COMMAND" in capsys.readouterr().out


def test_user_error_is_one_line(tmp_path, capsys):
    missing = tmp_path / "absent.pt"
    code = handwriting_cli.main(["sample", "--out", str(tmp_path / "x.svg"), "--checkpoint", str(missing)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("handwriting-hm: error:") and len(err.splitlines()) == 1
