"""The commands of README.md and docs/*.md as a user types them:
- every kgqa-* line of a ```bash block passes kgqa's command-line check and composes with Hydra (a renamed
  key, group or choice fails the default suite), the expensive ones too (GPU, full KB, KgCLUE, Slurm, sweeps);
- a ```bash run block runs as written and prints the ```text block after it;
- the cheap kgqa-* lines (the main command, and those about a trained `outputs/<run dir>`, here a toy run made
  once) run in a fresh folder and print what the pages say (slow); trainings are cut by one override (LONG).
The pages' links resolve and their lengths stay within what a newcomer reads (README <= 150, RESULTS <= 200)."""
from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from cli import ROOT
from kgqa.cli import CONFIG_DIR
from kgqa.cli.checks import check_command_line

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
CONFIGS = {"kgqa-train": "train", "kgqa-eval": "eval", "kgqa-predict": "predict", "kgqa-kb": "kb",
           "kgqa-pretrain": "pretrain"}
BLOCK = re.compile(r"^```bash[^\n]*\n(.*?)^```", re.M | re.S)


def page_commands() -> list[tuple[str, str]]:
    """(page, command) for every command of a ```bash block: continuation lines joined, comments cut,
    `a && b` and `a; b` as two commands."""
    found = []
    for page in PAGES:
        for block in BLOCK.findall(page.read_text(encoding="utf-8")):
            for line in block.replace("\\\n", " ").splitlines():
                line = re.split(r"\s#\s", line)[0].strip()
                found += [(page.name, part.strip()) for part in re.split(r"&&|;", line) if part.strip()]
    return found


def overrides(command: str) -> tuple[str, list[str]]:
    """(config name, the overrides) of a kgqa-* command, Hydra's flags (-m, --cfg job -p decode) left out
    and a run folder placeholder (outputs/<run dir>) made a name."""
    words = shlex.split(command.replace("<run dir>", "RUN").split(" > ")[0])
    args, skip = [], False
    for word in words[1:]:
        if skip:
            skip = False
        elif word.startswith("-"):
            skip = word in ("--cfg", "-p", "--package", "-c")
        else:
            args.append(word)
    return CONFIGS[words[0]], args


KGQA_COMMANDS = [(page, c) for page, c in page_commands() if c.split()[0] in CONFIGS]


def test_the_pages_hold_the_commands_they_are_about():
    names = {c.split()[0] for _, c in page_commands()}
    assert set(CONFIGS) | {"kgqa-report"} <= names and len(KGQA_COMMANDS) >= 40
    assert ("README.md", "kgqa-train") in KGQA_COMMANDS


@pytest.mark.parametrize("page, command", KGQA_COMMANDS, ids=[f"{p}:{c[:60]}" for p, c in KGQA_COMMANDS])
def test_every_page_command_composes(page, command):
    """kgqa's check of the command line (keys, groups, choices, as the console script runs it), then Hydra's
    composition with each swept key at its first value."""
    config, args = overrides(command)
    check_command_line(config, args)
    first = [re.sub(r"=([^\[\]',]*),[^\[\]']*$", r"=\1", a) for a in args]  # a sweep's first value
    with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
        cfg = compose(config, overrides=first, return_hydra_config=True)
    assert cfg.hydra.runtime.choices  # composed: every group and key the command names is there


def test_the_pages_keep_their_length():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 150
    assert len((ROOT / "experiments" / "RESULTS.md").read_text().splitlines()) <= 200


def test_the_pages_link_what_exists():
    """Every relative link of README.md and docs/ names a file (docs/repair.md, being written, may be missing)."""
    missing = []
    for page in PAGES:
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", page.read_text(encoding="utf-8")):
            path = (page.parent / target).resolve()
            if not path.exists() and path != (ROOT / "docs" / "repair.md").resolve():
                missing.append(f"{page.name} -> {target}")
    assert not missing


RUN_BLOCK = re.compile(r"^```bash run\n(.*?)^```\n\n```text\n(.*?)^```", re.M | re.S)
RUN_BLOCKS = [(page.name, *m) for page in PAGES for m in RUN_BLOCK.findall(page.read_text(encoding="utf-8"))]


def test_the_pages_mark_blocks_to_run():
    assert {page for page, _, _ in RUN_BLOCKS} >= {"decoding.md", "sweeps.md"}


@pytest.mark.slow
@pytest.mark.parametrize("page, commands, shown", RUN_BLOCKS, ids=[f"{p}:{c[:40]}" for p, c, _ in RUN_BLOCKS])
def test_a_run_block_prints_what_the_page_shows(page, commands, shown, tmp_path):
    """A ```bash run block, run as written by bash from the checkout (its paths are the checkout's), prints
    the ```text block after it."""
    env = {"PATH": f"{Path(sys.executable).parent}:{__import__('os').environ['PATH']}", "HOME": str(tmp_path),
           "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    proc = subprocess.run(["bash", "-e", "-c", commands], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == shown.strip()


EXPENSIVE = ("data=kgclue", "experiment=", "kb.path=", "trainer=gpu", "trainer=ddp", "hydra/launcher", "input=",
             "backbone=", "-m ", "kgqa-kb", "kgqa-pretrain", "size=")  # a GPU, the full KB, KgCLUE, Slurm, sweeps
LONG = {"kgqa-train": "kgqa-train trainer.max_epochs=1",  # trainings cut to a toy's time by one override
        "kgqa-train resume=outputs/<run dir> trainer.max_epochs=20 logger=csv":
            "kgqa-train resume=outputs/<run dir> trainer.max_epochs=2 logger=csv"}
CHEAP = sorted({c for _, c in KGQA_COMMANDS if not any(x in c for x in EXPENSIVE) and
                (c == "kgqa-train" or "<run dir>" in c)})


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory) -> Path:
    """outputs/<run dir> of the pages: a toy trained for one epoch, once for this module."""
    cwd = tmp_path_factory.mktemp("pages")
    subprocess.run([str(Path(sys.executable).parent / "kgqa-train"), "trainer.max_epochs=1", "logger=csv",
                    "+data.source.n_entities=300", "hydra.run.dir=outputs/RUN"], cwd=cwd, check=True,
                   capture_output=True, env=__import__("os").environ | {"WANDB_MODE": "offline"})
    return cwd / "outputs" / "RUN"


def test_the_cheap_commands_are_the_ones_about_a_run():
    assert "kgqa-train" in CHEAP and any(c.startswith("kgqa-predict") for c in CHEAP)
    assert any(c.startswith("kgqa-eval") for c in CHEAP) and any("resume=" in c for c in CHEAP)


@pytest.mark.slow
@pytest.mark.parametrize("command", CHEAP)
def test_a_cheap_command_runs_as_written(command, toy_run, tmp_path):
    """In a fresh folder holding outputs/<run dir> (the toy run): exit 0 and the final metrics the pages show,
    by name (an answer for a question). A long training is cut to a toy's time by one override (LONG)."""
    import shutil

    shutil.copytree(toy_run, tmp_path / "outputs" / "RUN")
    (tmp_path / "fixes.jsonl").write_text("")  # the pages' corrections file, made by a step before (empty here)
    words = shlex.split(LONG.get(command, command).replace("<run dir>", "RUN"))
    env = __import__("os").environ | {"WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    proc = subprocess.run([str(Path(sys.executable).parent / words[0]), *words[1:]], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    if words[0] == "kgqa-predict":
        # "the answer triples with their confidence" (docs/predict.md)
        assert re.search(r"^1\. .+  \(confidence [01]\.\d{3}\)$", proc.stdout, re.M), proc.stdout[-1000:]
    else:
        assert re.search(r"^(val|test)/em: [01]\.\d{4}$", proc.stdout, re.M), proc.stdout[-2000:]
