"""Every path, key and device an entry point is given is checked before its first expensive step: one
`kgqa:` line and a non-zero exit, nothing written (kgqa/cli/paths.py, kgqa/cli/checks.py)."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf

from cli import run_cli
from kgqa.cli import CONFIG_DIR
from kgqa.cli.checks import check_command_line, check_config, quoting_non_ascii, renamed_keys
from kgqa.cli.paths import check_paths
from kgqa.console import print_config
from kgqa.errors import ConfigError
from kgqa.files import atomic_output, swap_in_folder
from kgqa.kb.folder import KbFolder

UNWRITABLE = Path("/sys/kgqa-cannot-write-here")  # read-only even for root, who passes every permission bit


def composed(config_name: str, *overrides: str):
    with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
        return compose(config_name, overrides=quoting_non_ascii(list(overrides)))


def checked(config_name: str, *overrides: str) -> None:
    """What kgqa.cli.reporting_errors does before the entry point's own first step."""
    cfg = composed(config_name, *overrides)
    renamed_keys(cfg)
    check_config(cfg)
    check_paths(cfg)


def snapshot(root: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(root)): p.read_bytes() if p.is_file() else None for p in root.rglob("*")}


NAMES = st.sampled_from(["q.json", "with space.json", "问题 集.json", "ünïcode.json"])
CKPTS = st.sampled_from(["missing", "folder without best.ckpt", "run folder", "ckpt file"])
INPUTS = st.sampled_from(["missing", "folder", "file"])
OUTPUTS = st.sampled_from(["new", "new under missing parents", "existing file", "existing folder", "the input",
                           "under a file", "unwritable"])


def lay_out(root: Path, ckpt: str, inp: str, out: str, name: str) -> tuple[Path, Path, Path]:
    """The files one case names, under `root`."""
    ckpt_path = {"missing": root / "no run", "folder without best.ckpt": root / "some folder",
                 "run folder": root / "运行 run", "ckpt file": root / "best model.ckpt"}[ckpt]
    if ckpt == "folder without best.ckpt":
        ckpt_path.mkdir()
    elif ckpt == "run folder":
        (ckpt_path / "checkpoints").mkdir(parents=True)
        (ckpt_path / "checkpoints" / "best.ckpt").write_bytes(b"weights")
    elif ckpt == "ckpt file":
        ckpt_path.write_bytes(b"weights")
    input_path = root / "in" / name
    if inp == "folder":
        input_path.mkdir(parents=True)
    elif inp == "file":
        input_path.parent.mkdir()
        input_path.write_text('{"id": 0, "question": "问"}\n', encoding="utf-8")
    output_path = {"new": root / f"out {name}", "new under missing parents": root / "a" / "新 b" / name,
                   "existing file": root / f"old {name}", "existing folder": root / "old folder",
                   "the input": input_path, "under a file": root / "plain file" / name, "unwritable": UNWRITABLE}[out]
    if out == "existing file":
        output_path.write_text("answers", encoding="utf-8")
    elif out == "existing folder":
        output_path.mkdir()
    elif out == "under a file":
        output_path.parent.write_text("not a folder", encoding="utf-8")
    return ckpt_path, input_path, output_path


def expected_error(ckpt: str, inp: str, out: str, overwrite: bool) -> str | None:
    """The first problem of a case, as kgqa names it (None: the paths are fine), in the order checked:
    an output over an input, each input, then each output."""
    if out == "the input":
        return "would overwrite the input"
    problems = [(ckpt == "missing", "ckpt=", "no such file or folder"),
                (ckpt == "folder without best.ckpt", "ckpt=", "without checkpoints/best.ckpt"),
                (inp == "missing", "input=", "no such file"), (inp == "folder", "input=", "is a folder: give a file"),
                (out == "existing folder", "output=", "is a folder: give the path of a file"),
                (out == "existing file" and not overwrite, "output=", "exists: choose another output, or overwrite=true"),
                (out == "under a file", "output=", "is a file, so no folder can be made in it"),
                (out == "unwritable", "output=", "cannot write in")]
    return next((f"{key}|{text}" for bad, key, text in problems if bad), None)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ckpt=CKPTS, inp=INPUTS, out=OUTPUTS, name=NAMES, overwrite=st.booleans())
def test_every_combination_of_predict_paths_is_named_before_any_work(ckpt, inp, out, name, overwrite):
    """kgqa-predict's paths, each kind of case crossed with the others (names with spaces and non-ASCII
    characters among them): the first problem is a ConfigError naming its key, and nothing is written."""
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        ckpt_path, input_path, output_path = lay_out(root, ckpt, inp, out, name)
        before = snapshot(root)
        overrides = [f"ckpt={ckpt_path}", f"input={input_path}", f"output={output_path}", f"overwrite={overwrite}"]
        want = expected_error(ckpt, inp, out, overwrite)
        if want is None:
            checked("predict", *overrides)
        else:
            with pytest.raises(ConfigError) as error:
                checked("predict", *overrides)
            message = str(error.value)
            for part in want.split("|"):
                assert part in message, (message, want)
        assert snapshot(root) == before
        assert not UNWRITABLE.exists()


def test_predict_into_an_existing_folder_is_one_line_before_the_model_loads(tmp_path):
    """The issue's case: output=<a folder> ended, after every question was decoded, in IsADirectoryError.
    The checkpoint here is not even one: the paths are refused before it is read."""
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    (tmp_path / "run" / "checkpoints" / "best.ckpt").write_bytes(b"not read")
    questions = tmp_path / "问题 q.json"
    questions.write_text('{"id": 0, "question": "问"}\n', encoding="utf-8")
    (tmp_path / "answers").mkdir()
    before = snapshot(tmp_path)
    proc = run_cli("predict", f"ckpt={tmp_path / 'run'}", f"input={questions}", f"output={tmp_path / 'answers'}",
                   check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [f"kgqa: output={tmp_path / 'answers'} is a folder: "
                                                "give the path of a file to write"]
    assert snapshot(tmp_path) == before


def test_an_evaluation_never_writes_over_a_run_folder_unless_overwrite(tmp_path):
    """kgqa-eval hydra.run.dir=<the training run's folder> would replace its metrics.json."""
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    (tmp_path / "run" / "checkpoints" / "best.ckpt").write_bytes(b"not read")
    (tmp_path / "run" / "metrics.json").write_text("{}")
    before = snapshot(tmp_path / "run")
    proc = run_cli("evaluate", f"ckpt={tmp_path / 'run'}", f"hydra.run.dir={tmp_path / 'run'}", check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (f"kgqa: hydra.run.dir={tmp_path / 'run'} holds a run already "
                                                    "(metrics.json, checkpoints): choose another folder, or "
                                                    "overwrite=true to write over it")
    launch = (".hydra", "evaluate.log")  # what Hydra writes as it starts, before kgqa runs: the launch record
    assert {k: v for k, v in snapshot(tmp_path / "run").items() if not k.startswith(launch)} == before


def test_kb_out_over_a_kb_folder_with_changes_is_refused_unless_overwrite(tmp_path):
    """Data loss the issue found: kgqa-kb out=<an existing KB folder> rebuilt it, rc 0, dropping its
    recorded changes. The path has a space and non-ASCII characters, unquoted on the command line."""
    folder = tmp_path / "知识 库"
    run_cli("kb", f"out={folder}")
    additions = tmp_path / "add.tsv"
    additions.write_text("新实体（新）\t属性\t值\n", encoding="utf-8")
    KbFolder(folder).record("add", additions)
    before = snapshot(folder)
    proc = run_cli("kb", f"out={folder}", check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [f"kgqa: out={folder} exists and is not an empty folder: "
                                                "choose another out, or overwrite=true to replace it"]
    assert snapshot(folder) == before
    checked("kb", f"out={folder}", "overwrite=true")  # what overwrite=true lets through


@pytest.mark.parametrize("config_name, argv, message", [
    ("eval", ["ckpt=x", "data.rot=/d"], "data.rot is not a setting of kgqa-eval: nearest data.root"),
    ("eval", ["ckpt=x", "+data.root=/d"], "+data.root=...: data.root is already a setting of kgqa-eval; write data.root="),
    ("eval", ["ckpt=x", "data=kgclue"], "data=...: kgqa-eval has no data group (its groups: decode, kb"),
    ("train", ["trainer.max_epoch=3"], "trainer.max_epoch is not a setting of kgqa-train: nearest trainer.max_epochs"),
    ("train", ["-m", "lookahead=none,lcs_powr"], "lookahead=lcs_powr is not a choice of lookahead: nearest lcs_power"),
    ("train", ["kb=file", "kb.pth=/k"], "kb.pth is not a setting of kgqa-train: nearest kb.path"),
    ("predict", ["ckpt=x", "question=问", "beam=3"], "beam is not a setting of kgqa-predict: nearest"),
])
def test_an_unknown_key_or_choice_names_the_nearest(config_name, argv, message):
    with pytest.raises(ConfigError) as error:
        check_command_line(config_name, quoting_non_ascii(argv))
    assert str(error.value).startswith(message), str(error.value)


@pytest.mark.parametrize("config_name, argv", [
    ("eval", ["ckpt=x", "data.root=/d", "decode.beam=1,3", "lookahead=none"]),
    ("train", ["kb=file", "kb.path=/k", "+data.source.n_entities=300", "hydra.run.dir=/tmp/x", "trainer=ddp_cpu"]),
    ("train", ["experiment=article", "++trainer.max_epochs=1", "~augment"]),
    ("kb", ["out=/tmp/知识 库", "overwrite=true"]),
    ("train", ["--cfg", "job", "whatever.key=1"]),  # Hydra's own flags: left to Hydra
])
def test_known_keys_pass(config_name, argv):
    check_command_line(config_name, quoting_non_ascii(argv))


def test_an_unknown_key_is_one_line_not_hydras_struct_error():
    proc = run_cli("evaluate", "ckpt=x", "data.rot=/d", check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr and "not in struct" not in proc.stderr
    assert proc.stderr.strip().splitlines() == ["kgqa: data.rot is not a setting of kgqa-eval: "
                                                "nearest data.root, data_root, data"]


def test_data_root_is_data_root_everywhere_and_the_old_name_still_works(tmp_path, capsys):
    cfg = composed("eval", "ckpt=x", f"data_root={tmp_path}")
    renamed_keys(cfg)
    assert cfg.data.root == str(tmp_path) and cfg.data_root is None
    assert capsys.readouterr().err == f"kgqa: data_root= is deprecated, use data.root= (taken as data.root={tmp_path})\n"
    (tmp_path / "best.ckpt").write_bytes(b"not read")
    for config_name in ("eval", "predict"):
        with pytest.raises(ConfigError, match=f"data.root={tmp_path / 'gone'}: no such folder"):
            checked(config_name, f"ckpt={tmp_path / 'best.ckpt'}", f"data.root={tmp_path / 'gone'}")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_trainer_gpu_without_cuda_is_named_before_set_up():
    with pytest.raises(ConfigError, match="trainer.accelerator=gpu .*this machine has no CUDA GPU.*trainer=cpu"):
        check_config(composed("train", "trainer=gpu"))


def test_an_added_trainer_key_the_trainer_does_not_take_is_named():
    with pytest.raises(ConfigError, match="trainer.max_epoch is not a setting of lightning.pytorch.Trainer: "
                                          "nearest max_epochs"):
        check_config(composed("train", "+trainer.max_epoch=3"))
    check_config(composed("train", "+trainer.max_time=00:00:01:00"))


def test_outputs_respect_the_umask_and_folders_get_their_parents(tmp_path):
    """A group sharing a cluster project reads the outputs (mkstemp alone makes 0600, mkdtemp 0700);
    kgqa-pretrain out=pretrained/NAME works where pretrained/ does not exist yet."""
    old = os.umask(0o022)
    try:
        with atomic_output(tmp_path / "f.txt") as f:
            f.write("x")
        swap_in_folder(tmp_path / "pretrained" / "name", lambda folder: (folder / "config.json").write_text("{}"))
    finally:
        os.umask(old)
    assert (tmp_path / "f.txt").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "pretrained" / "name").stat().st_mode & 0o777 == 0o755


def test_the_run_folder_is_printed_whole(capsys):
    folder = "/a/run/folder/" + "deep/" * 30 + "end"
    print_config(OmegaConf.create({"seed": 0, "output_dir": folder}))
    assert f"run folder: {folder}\n" in capsys.readouterr().out


def test_non_ascii_values_need_no_quotes():
    assert quoting_non_ascii(["out=/data/知识 库", "kb.path=/k", "question='问'", "-m", "x=it's 问"]) == [
        "out='/data/知识 库'", "kb.path=/k", "question='问'", "-m", "x='it\\'s 问'"]
