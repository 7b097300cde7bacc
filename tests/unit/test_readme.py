"""The README is the manual, and true: every command it (and BENCHMARKS.md) shows is checked
here or run by CI.

Commands are read from its ```bash blocks and from inline code that starts like a command
(`python run.py ...`, `lt-bench ...`, `torchrun ...`, `python benchmarks/...`, `make ...`):

- ``python run.py``, ``torchrun ... run.py``, ``srun ... run.py``, ``lt-bench train|check-data``:
  every job's config is composed and checked (names, values, added keys), as run.py would
  before it starts; paths to data need not exist;
- ``lt-bench leaderboard``: run on the kept real-data records (benchmarks/results);
- ``lt-bench eval|compare`` and the other subcommands: the command exists (``--help``);
- ``python benchmarks/X.py --flags``: the script exists and accepts each flag (``--help``);
- ``make X`` and the install line: the Makefile target exists and CI (``.ci/run``) runs it;
- the ```python block runs.

A command of another kind fails the test until it is given a check here.
"""
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

README = (ROOT / "README.md").read_text()
STARTS = ("python run.py", "python3 run.py", "torchrun ", "srun ", "lt-bench ", "python benchmarks/", "make ",
          "python3 -m venv", ".venv/bin/", "tensorboard ")
EXTERNAL = {"tensorboard"}      # other tools' commands, shown for the reader's convenience


def _commands(text: str) -> list[str]:
    found = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            if line and not line.startswith("#"):
                found.append(line)
    for span in re.findall(r"`([^`\n]+)`", text):
        if span.startswith("torchrun ") and "run.py" not in span:
            continue                # the launcher's options alone, as prose mentions them
        if span.startswith(STARTS) and span not in found:
            found.append(span)
    return found


BENCHMARKS = (ROOT / "BENCHMARKS.md").read_text()
COMMANDS = _commands(README) + [c for c in _commands(BENCHMARKS) if c not in _commands(README)]


def _words(command: str) -> list[str]:
    """The command's words without the README's placeholders for "more of the same"
    (``[overrides]``, ``...``, ``<same overrides>``)."""
    command = re.sub(r"<[^<>]*>", "", command.replace("$", "X_"))
    return [w for w in shlex.split(command) if w not in ("[overrides]", "...")]


def _overrides(command: str) -> tuple[list[str], bool]:
    """The Hydra overrides of a run.py-like command (Hydra's own flags dropped), and whether it
    is a multirun."""
    words = _words(command)
    for flag, has_value in (("--cfg", True), ("--help", False), ("--info", False)):
        if flag in words:
            at = words.index(flag)
            del words[at:at + 1 + has_value]
    if words[:2] == ["lt-bench", "check-data"]:
        return ["mode=check_data", *[w for w in words[2:] if not w.startswith("--")]], False
    if words[:2] == ["lt-bench", "train"]:
        words = ["run.py", *words[2:]]
    at = next(i for i, w in enumerate(words) if w.endswith("run.py"))
    rest = words[at + 1:]
    return [w for w in rest if w != "-m"], "-m" in rest


def _check_run(command: str) -> None:
    from hydra import initialize_config_dir

    from lt_bench.compose import check_composed, compose_explained, sweep_jobs
    from hydra import compose
    overrides, multirun = _overrides(command)
    launcher = [o for o in overrides if o.startswith(("hydra/launcher=", "hydra.launcher."))]
    overrides = [o for o in overrides if o not in launcher]
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        if launcher:     # the launcher's settings exist in its config
            compose("config", overrides=launcher, return_hydra_config=True)
        jobs = sweep_jobs(overrides) if multirun else [overrides]
        assert jobs, command
        for job in jobs:
            check_composed(compose_explained(job), job)


def _check_make(command: str) -> None:
    makefile, ci = (ROOT / "Makefile").read_text(), (ROOT / ".ci" / "run").read_text()
    if command.startswith("python3 -m venv"):       # what `make install` does, word for word
        assert '-m venv $(VENV)' in makefile and 'pip install --quiet --disable-pip-version-check -e ".[dev]"' \
            in makefile
        return
    target = command.split()[1]
    assert re.search(rf"^{target}:", makefile, re.M), f"no make target {target}"
    assert target in ("install", "test-fast") or f"make {target}" in ci, f"CI does not run make {target}"


def _check_leaderboard(command: str, tmp_path: Path) -> None:
    from lt_bench.leaderboard import main
    kept = ROOT / "benchmarks" / "results"
    args = []
    words = _words(command)[2:]
    if not [w for w in words if not w.startswith("-")]:       # the command's name only
        with pytest.raises(SystemExit) as done:
            main(["--help"])
        assert done.value.code == 0
        return
    for word in words:
        if word.startswith("runs"):
            word = str(kept)
        elif word.startswith("benchmarks/"):
            word = str(ROOT / word)
        elif word.endswith((".tex", ".md", ".csv", ".html", ".json")):
            word = str(tmp_path / word)
        args.append(word)
    assert main(args) == 0, command


def _check_script(command: str) -> None:
    words = shlex.split(command)
    script = ROOT / words[1]
    assert script.is_file(), command
    out = subprocess.run([sys.executable, str(script), "--help"], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    for flag in (w.split("=")[0] for w in words[2:] if w.startswith("--")):
        assert flag in out.stdout, f"{command}: {flag} is not an option of {words[1]}"


@pytest.mark.parametrize("command", COMMANDS)
def test_every_readme_command_is_true(command, tmp_path):
    words = _words(command)
    if words[0] in EXTERNAL:
        return
    if words[0] in ("make", "python3") and (words[0] == "make" or words[1:3] == ["-m", "venv"]):
        _check_make(command)
    elif words[:2] == ["lt-bench", "leaderboard"]:
        _check_leaderboard(command, tmp_path)
    elif words[:2] in (["lt-bench", "check-data"], ["lt-bench", "train"]) or any(w.endswith("run.py") for w in words):
        if "mode=leaderboard" in words:
            words = [w.replace("[runs]", f"[{ROOT / 'benchmarks' / 'results'}]") for w in words]
        _check_run(" ".join(shlex.quote(w) for w in words))
    elif words[0] == "lt-bench":
        from lt_bench.cli import main
        with pytest.raises(SystemExit) as done:
            main([words[1], "--help"])
        assert done.value.code == 0, command
    elif words[0] == "python" and words[1].startswith("benchmarks/"):
        _check_script(command)
    elif words[0] == ".venv/bin/python" and words[1:3] == ["-m", "pytest"]:
        assert "make test" in (ROOT / ".ci" / "run").read_text()        # a subset of what CI runs
    elif words[0] == ".venv/bin/lint-imports":
        assert "test_import_linter_contracts_hold" in (ROOT / "tests/unit/test_architecture.py").read_text()
    else:
        pytest.fail(f"README command without a check: {command}")


def test_the_readme_shows_commands():
    assert len(COMMANDS) >= 30 and any("run.py -m +experiment=gol_table4" in c for c in COMMANDS)


def test_the_python_example_runs():
    import torch
    code = re.search(r"```python\n(.*?)```", README, re.S).group(1)
    scope = {"logits": torch.randn(8, 10), "labels": torch.randint(0, 10, (8,))}
    exec(code, scope)     # noqa: S102 - the README's own example
    assert torch.isfinite(scope["loss"]) and scope["scores"].shape == (8, 10)


def test_the_layout_names_every_module():
    layout = README[README.index("## Layout"):]
    missing = []
    for path in sorted((ROOT / "lt_bench").rglob("*.py")):
        if path.name == "__init__.py" and path.parent.name != "lt_bench":
            continue
        name = path.name if path.name != "__init__.py" else "lt_bench/"
        registered = path.parent.name in ("losses", "methods") and f"{path.parent.name}/ (one module per" in layout
        if name not in layout and f"{path.stem}/" not in layout and not registered:
            missing.append(str(path.relative_to(ROOT)))
    assert not missing, f"README's layout does not name: {missing}"


def test_every_record_field_is_documented():
    """The README's record paragraph names every field of the records this version writes (the
    kept real-data records of benchmarks/results, written by run.py)."""
    import json
    paragraph = README[README.index("A record holds"):README.index("## LVIS detection")]
    records = [r for path in (ROOT / "benchmarks" / "results").rglob("results.json")
               for r in json.loads(path.read_text())]
    assert records
    undocumented = sorted({k for r in records for k in r if f"`{k}`" not in paragraph})
    assert not undocumented, f"record fields the README does not name: {undocumented}"
