"""The commands of README.md and docs/*.md as a user types them: every kgqa-* command composes with Hydra
under kgqa's own command-line check (a renamed key, group or choice fails here), and the cheap ones run
as written. The pages' lengths stay within what a newcomer reads (README <= 150 lines, RESULTS <= 200)."""
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
