"""Pretrained backbones (the article's RoFormer-Sim-FT and the Chinese BERT family), tested on local replicas:
a tiny model of the same config class with the same files as each hub folder, saved with save_pretrained."""
from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path

import lightning as L
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from transformers import BertConfig, BertForMaskedLM, BertTokenizerFast, RoFormerConfig, RoFormerForCausalLM

from cli import compose_train, printed_metrics, run_cli
from kgqa.build import build_datamodule, build_module, build_trainer
from kgqa.cli import CONFIG_DIR
from kgqa.kb.columns import KnowledgeBase
from kgqa.data.kgclue import QAExample
from kgqa.data.sources import KgclueSource
from kgqa.data.tokenizer import PretrainedTokenizer, encode_key
from kgqa.data.toy import make_toy
from kgqa.data.triples import Key, Triple
from kgqa.datamodule import build_tokenizer
from kgqa.errors import CheckpointError, ConfigError
from kgqa.kb.keyspace import KeySpace
from kgqa.model import WITH_LM_HEAD, UniLM, build_backbone, load_pretrained_head, save_pretrained
from kgqa.checkpoints import tokenizer_from_state

# The Chinese BERT vocabularies' layout: [PAD], [unused1..99], then [UNK] [CLS] [SEP] [MASK] at 100..103.
SPECIALS = ["[PAD]", *(f"[unused{i}]" for i in range(1, 100)), "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
LATIN = "abcdefghijklmnopqrstuvwxyz0123456789"
TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)


def hub_vocab(chars) -> list[str]:
    """A Chinese BERT-style vocab.txt: single characters, WordPiece continuations and a few Latin words."""
    return SPECIALS + sorted(set(chars) | set(LATIN)) + [f"##{c}" for c in LATIN] + ["iphone", "##cm", "2020"]


def write_hub_tokenizer(folder: Path, vocab: list[str], lower_case: bool) -> None:
    """vocab.txt and the tokenizer.json a fast BERT tokenizer writes, as the BERT hub folders hold them."""
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    scratch = folder / "scratch"
    BertTokenizerFast(vocab=str(folder / "vocab.txt"), do_lower_case=lower_case).save_pretrained(scratch)
    shutil.move(scratch / "tokenizer.json", folder / "tokenizer.json")
    shutil.rmtree(scratch)


def save_lm(model, folder: Path) -> None:
    """save_pretrained, with an LM output bias that is not all zeros (as a trained one)."""
    with torch.no_grad():
        model.cls.predictions.bias.normal_()
    model.save_pretrained(folder)


def roformer_sim_char_ft(folder: Path, vocab: list[str], size: dict = TINY) -> Path:
    """junnyu/roformer_chinese_sim_char_ft_base: config.json (RoFormerForCausalLM, model_type roformer,
    is_decoder, eos 102) and vocab.txt; no tokenizer files, so AutoTokenizer picks RoFormerTokenizer (rjieba)."""
    config = RoFormerConfig(vocab_size=len(vocab), embedding_size=size["hidden_size"], max_position_embeddings=512,
                            type_vocab_size=2, pad_token_id=0, is_decoder=True, eos_token_id=102, **size)
    save_lm(RoFormerForCausalLM(config), folder)
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    return folder


def chinese_roberta_wwm_ext(folder: Path, vocab: list[str]) -> Path:
    """hfl/chinese-roberta-wwm-ext: a BERT (BertForMaskedLM) with vocab.txt, tokenizer.json, an empty
    added_tokens.json, special_tokens_map.json and a tokenizer_config.json naming no class (lower-cases)."""
    save_lm(BertForMaskedLM(BertConfig(vocab_size=len(vocab), type_vocab_size=2, pad_token_id=0, **TINY)), folder)
    write_hub_tokenizer(folder, vocab, lower_case=True)
    (folder / "added_tokens.json").write_text("{}")
    special = {"unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]", "cls_token": "[CLS]", "mask_token": "[MASK]"}
    (folder / "special_tokens_map.json").write_text(json.dumps(special))
    (folder / "tokenizer_config.json").write_text(json.dumps({"init_inputs": []}))
    return folder


def bert_base_chinese(folder: Path, vocab: list[str]) -> Path:
    """bert-base-chinese: a BERT (BertForMaskedLM) with vocab.txt, tokenizer.json and a tokenizer_config.json
    that only says do_lower_case: false."""
    save_lm(BertForMaskedLM(BertConfig(vocab_size=len(vocab), type_vocab_size=2, pad_token_id=0, **TINY)), folder)
    write_hub_tokenizer(folder, vocab, lower_case=False)
    (folder / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": False}))
    return folder


REPLICAS = {"roformer_sim_char_ft": roformer_sim_char_ft, "chinese_roberta_wwm_ext": chinese_roberta_wwm_ext,
            "bert_base_chinese": bert_base_chinese}
LOWER_CASES = {"roformer_sim_char_ft": True, "chinese_roberta_wwm_ext": True, "bert_base_chinese": False}
ARCH = {"roformer_sim_char_ft": "roformer", "chinese_roberta_wwm_ext": "bert", "bert_base_chinese": "bert"}

# A KB with Latin, digits and case: what a WordPiece or jieba split would cut differently in a question.
TRIPLES = [Triple(Key("iPhone 12", "发布时间", "手机"), "2020年"), Triple(Key("iPhone 12", "制造商", "手机"), "Apple"),
           Triple(Key("罗宾汉", "作者", ""), "佚名"), Triple(Key("X战警", "导演", "2000年电影"), "布莱恩·辛格"),
           Triple(Key("鏖战", "类型", ""), "动作片")]
QUESTIONS = [QAExample(0, "iPhone 12这款手机什么时候发布的？", TRIPLES[0]), QAExample(1, "谁导演了X战警？", TRIPLES[3])]
LACKING = set("鏖罗宾 ")  # characters of the KB the replica vocabularies leave out


def kb_chars() -> set[str]:
    return {c for t in TRIPLES for s in (t.key.subject, t.key.predicate, t.key.meaning, t.obj) for c in s} | {
        c for e in QUESTIONS for c in e.question}


@pytest.fixture(scope="module", params=sorted(REPLICAS))
def replica(request, tmp_path_factory) -> tuple[str, Path]:
    vocab = hub_vocab({c.lower() for c in kb_chars()} - LACKING)
    return request.param, REPLICAS[request.param](tmp_path_factory.mktemp(request.param), vocab)


def test_each_hub_layout_reads_one_character_per_token(replica):
    """Whatever tokenizer class the folder names (RoFormerTokenizer needs rjieba, absent here), kgqa reads its
    vocabulary one character a token, cased as the folder's tokenizer says, and a key spells the same inside a
    question as alone (a WordPiece would read "iphone" whole inside the question, "12" as "1" "##2")."""
    name, folder = replica
    tokenizer = PretrainedTokenizer(str(folder))
    assert tokenizer.lower_case == LOWER_CASES[name]
    assert (tokenizer.cls_id, tokenizer.sep_id, tokenizer.pad_id, tokenizer.unk_id) == (101, 102, 0, 100)
    question, subject = QUESTIONS[0].question, QUESTIONS[0].triple.key.subject
    ids = tokenizer.encode(question)
    assert len(ids) == len(question) and ids[: len(subject)] == tokenizer.encode(subject)
    assert (tokenizer.encode("I") == tokenizer.encode("i")) == LOWER_CASES[name]
    assert tokenizer.decode(tokenizer.encode("发布时间")) == "发布时间"


def test_kb_keys_are_spelled_without_unk_and_decode_to_themselves(replica, caplog):
    """UNK-free: the characters the pretrained vocabulary lacks are added (and the count logged); every KB key
    then spells without [UNK], and its tokens lead the trie back to that key."""
    name, folder = replica
    kb = KnowledgeBase(TRIPLES)
    assert set(PretrainedTokenizer(str(folder)).missing(kb.strings())) >= LACKING  # the replica does lack them
    with caplog.at_level(logging.INFO, logger="kgqa.datamodule"):
        tokenizer = build_tokenizer(str(folder), QUESTIONS, kb)
    added = len(tokenizer.added)
    assert added >= len(LACKING) and f": {added} characters of the KB and the training questions added" in caplog.text
    assert tokenizer.vocab_size == tokenizer.base_size + added
    keyspace = KeySpace(kb, tokenizer, "spm")
    for key_id, key in enumerate(kb.keys):
        tokens = encode_key(tokenizer, key, "spm")
        assert tokenizer.unk_id not in tokens
        assert keyspace.kb.keys[int(keyspace.trie.values_under(keyspace.trie.walk(tokens))[0])] == key
        spelled = tokenizer.decode(tokenizer.encode(key.subject))
        assert spelled == (key.subject.lower() if tokenizer.lower_case else key.subject)


def test_added_tokens_grow_the_embeddings_from_the_existing_rows(replica):
    name, folder = replica
    tokenizer = build_tokenizer(str(folder), QUESTIONS, KnowledgeBase(TRIPLES))
    before = build_backbone(ARCH[name], tokenizer.base_size, pretrained=str(folder)).get_input_embeddings().weight
    backbone = build_backbone(ARCH[name], tokenizer.vocab_size, pretrained=str(folder), **TINY)
    weight = backbone.get_input_embeddings().weight
    assert weight.shape[0] == tokenizer.vocab_size and backbone.config.vocab_size == tokenizer.vocab_size
    assert torch.equal(weight[: tokenizer.base_size], before)  # the pretrained rows are kept
    new = weight[tokenizer.base_size :]
    assert new.abs().sum(1).min() > 0 and torch.cdist(new, new).fill_diagonal_(1).min() > 0  # not zeros, distinct
    model = UniLM(backbone)
    ids = torch.tensor([tokenizer.encode(QUESTIONS[0].question)])
    assert model(ids, torch.zeros_like(ids), torch.ones_like(ids, dtype=torch.bool)).shape[-1] == tokenizer.vocab_size


def test_the_pretrained_lm_head_predicts(replica, tmp_path, caplog):
    """UniLM's head is the folder's LM head (transform and output bias; added tokens at the mean bias), as in the
    article's UniLM; a folder without one keeps a fresh head."""
    name, folder = replica
    tokenizer = build_tokenizer(str(folder), QUESTIONS, KnowledgeBase(TRIPLES))
    model = UniLM(build_backbone(ARCH[name], tokenizer.vocab_size, pretrained=str(folder)))
    load_pretrained_head(model, ARCH[name], str(folder))
    head = WITH_LM_HEAD[ARCH[name]].from_pretrained(str(folder)).cls.predictions
    assert torch.equal(model.transform[0].weight, head.transform.dense.weight)
    assert torch.equal(model.transform[2].bias, head.transform.LayerNorm.bias)
    assert torch.equal(model.lm_bias[: tokenizer.base_size], head.bias)
    assert torch.allclose(model.lm_bias[tokenizer.base_size :], head.bias.mean().expand(len(tokenizer.added)))
    headless = tmp_path / "headless"
    shutil.copytree(folder, headless)
    WITH_LM_HEAD[ARCH[name]].from_pretrained(str(folder)).base_model.save_pretrained(headless)
    kept = model.transform[0].weight.clone()
    with caplog.at_level(logging.INFO, logger="kgqa.model"):
        load_pretrained_head(model, ARCH[name], str(headless))
    assert "holds no LM head" in caplog.text and torch.equal(model.transform[0].weight, kept)


def test_checkpoint_state_rebuilds_the_same_tokenizer_or_refuses(replica, tmp_path):
    name, folder = replica
    tokenizer = build_tokenizer(str(folder), QUESTIONS, KnowledgeBase(TRIPLES))
    again = tokenizer_from_state(tokenizer.state(), tmp_path / "x.ckpt")
    assert again.vocab_size == tokenizer.vocab_size and all(
        again.encode(s) == tokenizer.encode(s) for s in KnowledgeBase(TRIPLES).strings())
    with pytest.raises(CheckpointError, match="holds no vocabulary"):
        tokenizer_from_state({"pretrained": str(folder)}, tmp_path / "x.ckpt")
    changed = tmp_path / "changed"
    shutil.copytree(folder, changed)
    vocab = (changed / "vocab.txt").read_text(encoding="utf-8").splitlines()
    (changed / "vocab.txt").write_text("\n".join(vocab[:-1]) + "\n", encoding="utf-8")
    (changed / "tokenizer.json").unlink(missing_ok=True)
    with pytest.raises(CheckpointError, match="not the one the model was trained with"):
        tokenizer_from_state(tokenizer.state() | {"pretrained": str(changed)}, tmp_path / "x.ckpt")
    with pytest.raises(CheckpointError, match="no tokenizer could be read"):
        tokenizer_from_state(tokenizer.state() | {"pretrained": str(tmp_path / "gone")}, tmp_path / "x.ckpt")


def test_a_backbone_of_another_architecture_is_refused(replica):
    name, folder = replica
    other = "bert" if ARCH[name] == "roformer" else "roformer"
    with pytest.raises(ConfigError, match=f"holds a {ARCH[name]} model"):
        build_backbone(other, 500, pretrained=str(folder))


def test_experiment_article_has_the_reference_settings():
    with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=["experiment=article", "kb.path=/data/Knowledge.txt"])
    assert cfg.backbone.arch == "roformer" and cfg.backbone.pretrained == "junnyu/roformer_chinese_sim_char_ft_base"
    assert (cfg.optim.lr, cfg.trainer.max_epochs, cfg.data.module.batch_size, cfg.decode.beam) == (5e-6, 3, 32, 3)
    assert cfg.target == "spm" and cfg.lookahead._target_.endswith("LcsPowerLookahead")
    assert cfg.data.name == "kgclue" and cfg.kb.path == "/data/Knowledge.txt" and cfg.kb._target_.endswith("FileKB")
    assert cfg.trainer.accelerator == "gpu" and cfg.logger._target_.endswith("WandbLogger")


def replica_lacking(kind: str, folder: Path, triples: list[Triple], questions: list[QAExample]) -> Path:
    """A replica of `kind` whose vocabulary lacks every 7th character of the KB's subjects."""
    chars = {c for t in triples for s in (t.key.subject, t.key.predicate, t.key.meaning, t.obj) for c in s}
    chars |= {c for e in questions for c in e.question}
    lacking = set(sorted({c for t in triples for c in t.key.subject})[::7])
    return REPLICAS[kind](folder, hub_vocab({c.lower() for c in chars} - lacking))


def train_resume_and_decode(tmp_path: Path, question: str, *overrides: str) -> None:
    """Trained, checkpointed, resumed and decoded through the CLIs, each rebuilding the same tokenizer (added
    characters included) and the resized model from the checkpoint."""
    run_dir = tmp_path / "run"
    trained = printed_metrics(run_cli("train", *overrides, "trainer.max_epochs=1", "trainer.num_sanity_val_steps=0",
                                      "logger=csv", f"hydra.run.dir={run_dir}"))
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["KgqaDataModule"]
    assert state["added"] and set(state) >= {"pretrained", "fingerprint"}
    resumed = printed_metrics(run_cli("train", f"resume={run_dir}", f"hydra.run.dir={tmp_path}/resumed"))
    assert resumed == trained
    evaluated = printed_metrics(run_cli("evaluate", f"ckpt={run_dir}", "split=test", "trainer=cpu", "logger=csv",
                                        f"hydra.run.dir={tmp_path}/eval"))
    assert evaluated["test/em"] == trained["test/em"] and evaluated["test/f1"] == trained["test/f1"]
    proc = run_cli("predict", f"ckpt={run_dir}", f"question='{question}'", f"hydra.run.dir={tmp_path}/predict")
    assert any(line.startswith("1. ") for line in proc.stdout.splitlines())


@pytest.mark.e2e
def test_experiment_article_runs_from_one_command(kgclue_root, tmp_path):
    """experiment=article on a replica of its RoFormer-Sim-FT folder and a Knowledge.txt, on the CPU: the one
    command works, with the reference settings, and its run resumes and decodes."""
    splits = KgclueSource(str(kgclue_root), {"train": "train.json", "val": "dev.json", "test": "test_public.json"},
                          limit=48).splits
    triples = [e.triple for split in splits.values() for e in split]
    knowledge = tmp_path / "Knowledge.txt"
    knowledge.write_text("".join(f"{t.key.full_subject}\t{t.key.predicate}\t{t.obj}\n" for t in triples), encoding="utf-8")
    folder = replica_lacking("roformer_sim_char_ft", tmp_path / "roformer", triples, splits["train"])
    train_resume_and_decode(tmp_path, splits["test"][0].question, "experiment=article", f"backbone.pretrained={folder}",
                            f"kb.path={knowledge}", f"data.root={kgclue_root}", "data.source.limit=48", "trainer=cpu")
    run = OmegaConf.load(tmp_path / "run" / "run_config.yaml")
    assert (run.optim.lr, run.data.module.batch_size, run.data.module.max_question_len, run.decode.beam) == (5e-6, 32, 63, 3)


@pytest.mark.slow
@pytest.mark.e2e
@pytest.mark.parametrize("kind", ["chinese_roberta_wwm_ext", "bert_base_chinese"])
def test_bert_replicas_train_resume_and_decode(kind, tmp_path):
    toy = make_toy(n_entities=300)
    folder = replica_lacking(kind, tmp_path / kind, toy.triples, toy.splits["train"])
    train_resume_and_decode(tmp_path, toy.splits["test"][0].question, f"backbone={kind}", f"backbone.pretrained={folder}",
                            "+data.source.n_entities=300")


# --- the pretrained path trains as the from-config one (issue 24) ---------------------------------------------
KGQA_TINY = dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=4, intermediate_size=256)  # conf/size/tiny


def loss_curve(run_dir: Path) -> list[float]:
    rows = (run_dir / "csv" / "version_0" / "metrics.csv").read_text().splitlines()
    column = rows[0].split(",").index("train/loss")
    return [float(r.split(",")[column]) for r in rows[1:] if r.split(",")[column]]


def with_unused_tokens(model: UniLM, tokens: list[str], count: int) -> list[str]:
    """`tokens` and `count` characters the data never uses, their embedding rows and output biases added to
    `model`: a vocabulary as much larger than the data's as a real Chinese checkpoint's."""
    used = set(tokens)
    unused = [c for c in map(chr, range(0x4E00, 0x9FFF)) if c not in used][:count]
    model.backbone.resize_token_embeddings(len(tokens) + count, mean_resizing=False)
    model.lm_bias = torch.nn.Parameter(torch.cat([model.lm_bias.data, torch.randn(count)]))
    return tokens + unused


@pytest.mark.e2e
@pytest.mark.slow  # 4 minutes each on 2 cores: .ci/run runs them after the default suite
def test_the_same_weights_train_the_same_through_a_pretrained_folder(tmp_path):
    """A from-config model at the run's seed, saved with save_pretrained (weights, LM head and vocabulary), trains
    through backbone.pretrained= exactly as from config: from_pretrained's eval mode and its trainable copy of
    RoFormer's fixed position table each made these differ (the table after the first steps). So does the same
    model with 2,000 more tokens the data never uses: the loss's softmax leaves them out (loss.data_vocabulary)."""
    cfg = compose_train("logger=csv")
    L.seed_everything(cfg.seed, workers=True)  # as kgqa-train does before it builds the model
    dm = build_datamodule(cfg)
    dm.setup()
    model = build_module(cfg, dm.tokenizer.vocab_size).model
    folders = {"same": save_pretrained(model, "roformer", dm.tokenizer.vocab, False, tmp_path / "same")}
    larger = with_unused_tokens(model, dm.tokenizer.vocab, 2000)
    folders["larger"] = save_pretrained(model, "roformer", larger, False, tmp_path / "larger")
    runs = {}
    for name, extra in (("config", []), *((name, [f"backbone.pretrained={f}"]) for name, f in folders.items())):
        run_dir = tmp_path / f"run_{name}"
        run_cli("train", "logger=csv", "trainer.max_epochs=3", f"hydra.run.dir={run_dir}", *extra)
        runs[name] = json.loads((run_dir / "metrics.json").read_text())["metrics"], loss_curve(run_dir)
    config_metrics, config_curve = runs.pop("config")
    for name, (metrics, curve) in runs.items():
        assert metrics.keys() == config_metrics.keys() and len(curve) == len(config_curve) > 5, name
        assert metrics == pytest.approx(config_metrics, abs=1e-6), name
        assert curve == pytest.approx(config_curve, rel=1e-4), name


class ModeProbe(L.Callback):
    """Records whether every module is in train mode at each training step, and in eval mode at each validation step."""

    def __init__(self):
        self.training, self.validating = [], []

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self.training.append(all(m.training for m in module.modules()))

    def on_validation_batch_start(self, trainer, module, batch, batch_idx, dataloader_idx=0):
        self.validating.append(not any(m.training for m in module.modules()))


@pytest.mark.parametrize("pretrained", [False, True], ids=["from_config", "pretrained"])
def test_every_backbone_trains_with_dropout_and_decodes_without(pretrained, tmp_path):
    """Lightning keeps each submodule's mode, and from_pretrained returns its model in eval mode: the pretrained
    backbone was fine-tuned without dropout. RoFormer's sinusoidal position table stays fixed through training."""
    vocab = hub_vocab({c for t in make_toy().triples for c in t.key.subject})
    folder = roformer_sim_char_ft(tmp_path / "folder", vocab)
    cfg = compose_train("logger=csv", *([f"backbone.pretrained={folder}"] if pretrained else []))
    cfg.output_dir = str(tmp_path / "run")
    dm = build_datamodule(cfg)
    dm.setup()
    module = build_module(cfg, dm.tokenizer.vocab_size)
    positions = module.model.backbone.encoder.embed_positions.weight.clone()
    probe = ModeProbe()
    trainer = build_trainer(cfg, callbacks=[probe], max_epochs=1, limit_train_batches=3, limit_val_batches=2,
                            num_sanity_val_steps=0, enable_checkpointing=False)
    trainer.fit(module, dm)
    assert probe.training == [True] * 3 and probe.validating == [True] * 2
    assert torch.equal(module.model.backbone.encoder.embed_positions.weight, positions)


def test_the_loss_runs_over_the_characters_of_the_data(replica):
    """With a pretrained vocabulary the loss's softmax covers the special tokens and the characters of the KB
    and the training questions only (a from-config vocabulary is exactly those: no restriction there)."""
    name, folder = replica
    cfg = compose_train(f"backbone={name}", f"backbone.pretrained={folder}", "logger=csv")
    dm = build_datamodule(cfg)
    dm.setup()
    vocabulary = dm.loss_vocabulary
    t = dm.tokenizer
    chars = set(dm.kb.characters()) | {c for e in dm.splits["train"] for c in e.question}
    assert vocabulary.tolist() == sorted({t.pad_id, t.unk_id, t.cls_id, t.sep_id} | {t.encode(c)[0] for c in chars})
    assert len(vocabulary) < t.vocab_size
    config_dm = build_datamodule(compose_train())
    config_dm.setup()
    assert config_dm.loss_vocabulary is None
    model = build_module(cfg, t.vocab_size).model.eval()
    batch = dm.collate(dm.splits["train"][:4])
    logits, targets, _ = model.target_scores(batch["input_ids"], batch["segment_ids"], batch["valid"])
    kept = logits[:, vocabulary]
    by_hand = (kept.logsumexp(-1) - logits.gather(1, targets[:, None])[:, 0]).mean()
    loss = model.loss(batch["input_ids"], batch["segment_ids"], batch["valid"], vocabulary=vocabulary)
    assert loss.item() == pytest.approx(by_hand.item(), rel=1e-6)
    assert loss.item() < model.loss(batch["input_ids"], batch["segment_ids"], batch["valid"]).item()


@pytest.mark.e2e
@pytest.mark.slow  # 4 minutes each on 2 cores: .ci/run runs them after the default suite
def test_an_article_like_folder_learns_the_toy_set(kgclue_root, tmp_path):
    """The main command through a folder laid out like the article's RoFormer-Sim-FT at tiny's shape: a vocabulary
    of KgCLUE's characters, far larger than the toy set's, that lacks common surnames of its subjects."""
    chars = {c for name in ("train.json", "dev.json") for line in (kgclue_root / name).open(encoding="utf-8")
             for c in json.loads(line)["question"] if not c.isspace()}
    folder = roformer_sim_char_ft(tmp_path / "folder", hub_vocab({c.lower() for c in chars} - set("张王李赵刘陈")),
                                  KGQA_TINY)
    proc = run_cli("train", f"backbone.pretrained={folder}", "logger=csv", f"hydra.run.dir={tmp_path / 'run'}")
    added = int(re.search(r": (\d+) characters of the KB and the training questions added", proc.stdout + proc.stderr)[1])
    assert added >= 1 and len(chars) > 10 * len(make_toy().triples[0].key.subject)
    assert printed_metrics(proc)["test/em"] >= 0.9
