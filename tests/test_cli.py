"""The `glocal` entry point: help lists every subcommand; user errors give a message, not a traceback."""

from __future__ import annotations

import subprocess
import sys

from glocal_lib.cli import SUBCOMMANDS, main


def test_help_lists_all_subcommands(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in SUBCOMMANDS:
        assert name in out


def test_unknown_command_is_usage_error(capsys):
    assert main(["frobnicate"]) == 2
    assert "unknown command" in capsys.readouterr().err


def test_every_subcommand_has_help():
    for name in SUBCOMMANDS:
        proc = subprocess.run([sys.executable, "-m", "glocal_lib.cli", name, "--help"],
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        assert "usage" in proc.stdout.lower()


def test_missing_dataset_folder_is_a_clear_error(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "glocal_lib.cli", "data", "check", "mvtec",
                           "--root", str(tmp_path / "nowhere")], capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "nowhere" in proc.stderr
    assert "Traceback" not in proc.stderr
