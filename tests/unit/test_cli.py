"""The lt-bench command: its version and the commands it hands over."""
import importlib.metadata

import pytest

from lt_bench import __version__
from lt_bench.cli import main, package_version


def test_version_is_the_installed_package_version(capsys, monkeypatch):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out == f"lt-bench {importlib.metadata.version('lt_bench')}\n"

    def not_installed(name):
        raise importlib.metadata.PackageNotFoundError(name)
    monkeypatch.setattr(importlib.metadata, "version", not_installed)
    assert package_version() == __version__


@pytest.mark.parametrize("command", ["leaderboard", "eval", "compare"])
def test_each_command_has_its_own_help(command, capsys):
    with pytest.raises(SystemExit) as done:
        main([command, "--help"])
    assert done.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: lt-bench {command} ")


def test_top_level_help_lists_every_command(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert all(name in out for name in ("train", "check-data", "leaderboard", "eval", "compare", "--version"))
