"""kgqa-pretrain: a tiny backbone pre-trained on the toy KB and training questions through the CLI, its folder
read by transformers' Auto classes, and kgqa-train started from it through backbone.pretrained=."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from transformers import AutoConfig, AutoTokenizer, DataCollatorForLanguageModeling

from cli import ROOT, compose_train, printed_metrics, run_cli
from kgqa.build import build_datamodule, build_module
from kgqa.cli import CONFIG_DIR
from kgqa.cli.checks import check_config
from kgqa.cli.paths import check_paths
from kgqa.cli.pretrain import check_settings
from kgqa.data.sources import ToySource
from kgqa.kb.sources import SynthKB
from kgqa.data.tokenizer import PretrainedTokenizer
from kgqa.errors import ConfigError
from kgqa.model import UniLM, build_backbone, load_pretrained_head
from kgqa.pretrain import MASKED_LM, MaskedLanguageModel, MaskedTexts, PretrainingTexts, characters, write_tokenizer

TOY = "+data.source.n_entities=300"
TINY = ["backbone.hidden_size=32", "backbone.num_hidden_layers=1", "backbone.num_attention_heads=2",
        "backbone.intermediate_size=64"]
LOSS_FACTOR = 1.25  # a fresh model's masked-LM loss over the pre-trained one's, at least (measured: 5.47 / 3.64 = 1.50)


@pytest.fixture(scope="module")
def toy():
    source = ToySource(n_entities=300)
    return source, SynthKB().build(source)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory) -> Path:
    """A roformer (hidden 32, 1 layer) pre-trained for 330 steps (6 epochs of the toy texts), one torch thread."""
    out = tmp_path_factory.mktemp("pretrained") / "model"
    with pytest.MonkeyPatch.context() as env:
        env.setenv("OMP_NUM_THREADS", "1")
        proc = run_cli("pretrain", TOY, *TINY, "trainer.max_epochs=6", "data.module.batch_size=64", "optim.lr=1e-2",
                       "logger=csv", f"out={out}", f"hydra.run.dir={out.parent / 'run'}")
    summary = json.loads(proc.stdout[proc.stdout.index("{"):])
    assert summary["steps"] == 330 and summary["out"] == str(out)
    return out


def masked_lm_loss(model, texts: PretrainingTexts, tokenizer_folder: Path) -> float:
    """The loss on the same masked tokens of 1,000 texts (the masking seeded), without dropout."""
    masker = DataCollatorForLanguageModeling(AutoTokenizer.from_pretrained(tokenizer_folder), seed=0)
    batch = MaskedTexts(PretrainedTokenizer(str(tokenizer_folder)), masker, 64)([texts[i] for i in range(0, 3000, 3)])
    with torch.no_grad():
        return float(model.eval()(**batch).loss)


@pytest.mark.e2e  # the pretrained fixture runs kgqa-pretrain
def test_the_masked_lm_loss_falls(pretrained, toy):
    source, kb = toy
    texts = PretrainingTexts([e.question for e in source.splits["train"]], kb, "spm")
    trained = MASKED_LM["roformer"].from_pretrained(pretrained)
    torch.manual_seed(0)
    fresh = MASKED_LM["roformer"](trained.config)
    before, after = masked_lm_loss(fresh, texts, pretrained), masked_lm_loss(trained, texts, pretrained)
    assert before / after >= LOSS_FACTOR, (before, after)


@pytest.mark.e2e  # the pretrained fixture runs kgqa-pretrain
def test_the_folder_reads_with_auto_classes_one_character_per_token(pretrained, toy):
    source, kb = toy
    assert AutoConfig.from_pretrained(pretrained, trust_remote_code=False).model_type == "roformer"
    assert {"config.json", "model.safetensors", "vocab.txt", "tokenizer.json"} <= {p.name for p in pretrained.iterdir()}
    tokenizer = AutoTokenizer.from_pretrained(pretrained, trust_remote_code=False)
    for key in kb.keys[::50]:
        text = key.subject + key.predicate + key.meaning
        tokens = tokenizer.tokenize(text)
        assert [t.removeprefix("##") for t in tokens] == list(text)
        assert tokenizer.unk_token_id not in tokenizer.convert_tokens_to_ids(tokens)
    questions = [e.question for e in source.splits["train"]]
    assert PretrainedTokenizer(str(pretrained)).missing([*questions, *kb.strings(), *kb.object_strings]) == []


@pytest.mark.parametrize("arch", sorted(MASKED_LM))
def test_each_architecture_saves_a_folder_kgqa_loads(arch, toy, tmp_path):
    """What pretrain_into writes, for BERT and RoFormer alike: build_backbone and load_pretrained_head take
    its encoder and LM head as they are, and kgqa's vocabulary of it needs no added character."""
    source, kb = toy
    questions = [e.question for e in source.splits["train"]]
    write_tokenizer(tmp_path, characters(questions, kb))
    tokenizer = PretrainedTokenizer(str(tmp_path))
    backbone = {"arch": arch, "pretrained": None, "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                "intermediate_size": 64}
    lm = MaskedLanguageModel(tokenizer.vocab_size, backbone, optim={}, scheduler={}).model
    lm.save_pretrained(tmp_path)
    assert tokenizer.missing([*questions, *kb.strings()]) == []
    unilm = UniLM(build_backbone(arch, tokenizer.vocab_size, pretrained=str(tmp_path)))
    load_pretrained_head(unilm, arch, str(tmp_path))
    assert torch.equal(unilm.backbone.get_input_embeddings().weight, lm.get_input_embeddings().weight)
    assert torch.equal(unilm.transform[0].weight, lm.cls.predictions.transform.dense.weight)


@pytest.mark.e2e  # the pretrained fixture runs kgqa-pretrain
def test_training_starts_from_the_pretrained_weights(pretrained, tmp_path):
    """kgqa-train backbone.pretrained=<folder> runs end to end; the model it builds holds the pre-trained
    embeddings and LM head before its first step, and has no character to add (no [UNK])."""
    overrides = [TOY, f"backbone.pretrained={pretrained}", "logger=csv"]
    lm = MASKED_LM["roformer"].from_pretrained(pretrained)
    pre_embeddings = lm.get_input_embeddings().weight
    cfg = compose_train(*overrides)
    dm = build_datamodule(cfg)
    dm.setup()
    assert dm.tokenizer.added == [] and dm.tokenizer.vocab_size == lm.config.vocab_size
    unilm = build_module(cfg, dm.tokenizer.vocab_size).model
    assert torch.equal(unilm.backbone.get_input_embeddings().weight, pre_embeddings)
    assert torch.equal(unilm.transform[0].weight, lm.cls.predictions.transform.dense.weight)
    assert torch.equal(unilm.lm_bias, lm.cls.predictions.bias)

    run_dir = tmp_path / "run"  # the folder named relative to where kgqa-train starts: recorded by its absolute path
    relative = [TOY, f"backbone.pretrained={os.path.relpath(pretrained, ROOT)}", "logger=csv"]
    metrics = printed_metrics(run_cli("train", *relative, "trainer.max_epochs=1", "trainer.num_sanity_val_steps=0",
                                      f"hydra.run.dir={run_dir}"))
    assert {"val/emf1", "test/em"} <= metrics.keys()
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    trained = ckpt["state_dict"]["model.backbone.embeddings.word_embeddings.weight"]
    assert ckpt["KgqaDataModule"]["pretrained"] == str(pretrained) and ckpt["KgqaDataModule"]["added"] == []
    # a run's factors name its starting weights: kgqa-report keeps it apart from a run from random init
    assert json.loads((run_dir / "metrics.json").read_text())["factors"]["pretrained"] == str(pretrained)
    # one epoch moved them a little (measured: 0.09 of their norm); fresh ones would be as far as the norm itself
    assert (trained - pre_embeddings).norm() < 0.3 * pre_embeddings.norm()


def test_the_texts_hold_no_val_or_test_question(toy):
    source, kb = toy
    train = {e.question for e in source.splits["train"]}
    texts = PretrainingTexts([e.question for e in source.splits["train"]], kb, "spm")
    held_out = {e.question for split in ("val", "test") for e in source.splits[split]} - train
    parts = {part for text in texts for part in text}
    assert held_out and not held_out & parts
    assert train <= parts and len(texts) == len(train) + sum(map(len, kb.tables)) + len(kb.object_strings) + len(kb)
    assert texts[-1] == kb.keys[len(kb) - 1].parts("spm")


def compose_pretrain(*overrides: str):
    with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
        return compose("pretrain", overrides=list(overrides))


def test_bad_settings_are_refused_naming_the_key(tmp_path):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "config.json").write_text("{}")
    with pytest.raises(ConfigError, match="out=.*taken exists and is not an empty folder.*overwrite=true"):
        check_paths(compose_pretrain(f"out={tmp_path / 'taken'}"))
    check_paths(compose_pretrain(f"out={tmp_path / 'taken'}", "overwrite=true"))
    check_paths(compose_pretrain(f"out={tmp_path / 'new' / 'missing parent'}"))
    with pytest.raises(ConfigError, match="backbone.pretrained=.*from random weights"):
        check_settings(compose_pretrain(f"out={tmp_path / 'new'}", f"backbone.pretrained={tmp_path}"))
    with pytest.raises(ConfigError, match="max_len=600 exceeds backbone.max_position_embeddings=512"):
        check_settings(compose_pretrain(f"out={tmp_path / 'new'}", "max_len=600"))
    with pytest.raises(ConfigError, match=r"mask_rate=1.5 is not valid: expected a number in \[0.01, 0.9\]"):
        check_config(compose_pretrain(f"out={tmp_path / 'new'}", "mask_rate=1.5"))
    with pytest.raises(ConfigError, match="out=DIR"):
        check_config(compose_pretrain())
