"""In-domain pre-training: a masked LM over the KB's strings and the training questions, for a backbone
that would otherwise start from random weights (no pretrained Chinese weights here).

texts (training questions; each subject, predicate, meaning and object; each whole key) → char tokens
→ 15% masked (transformers' DataCollatorForLanguageModeling) → BertForMaskedLM / RoFormerForMaskedLM
→ a Hugging Face folder (save_pretrained: config.json, model.safetensors, vocab.txt, tokenizer files) that
`kgqa-train backbone.pretrained=<folder>` loads as it loads a hub model (kgqa.model.build_backbone,
load_pretrained_head; kgqa.data.tokenizer.PretrainedTokenizer reads its vocabulary one character per token).

Dev and test questions are never read: only the training split's.
"""
from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader
from transformers import BertForMaskedLM, BertTokenizerFast, DataCollatorForLanguageModeling, RoFormerForMaskedLM

from kgqa.data.tokenizer import SPECIAL_TOKENS, PretrainedTokenizer, encode_parts
from kgqa.kb.columns import KnowledgeBase
from kgqa.kb.strings import ItemView, as_strings, code_points
from kgqa.model import backbone_config
from kgqa.module import optimizer_and_schedule

log = logging.getLogger(__name__)
MASKED_LM = {"bert": BertForMaskedLM, "roformer": RoFormerForMaskedLM}
MASK = "[MASK]"
# The code points BERT's tokenizer splits off one by one (its _is_chinese_char); any other character inside
# a word is read by WordPiece, which needs its "##" continuation in the vocabulary to keep it one token.
CJK_RANGES = ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F), (0x2B740, 0x2B81F),
              (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F))


class PretrainingTexts(ItemView):
    """Every pre-training text as a tuple of parts, made when asked for (a KgCLUE KB holds millions): each
    training question (q,), each subject, predicate, meaning and object (s,), and each key in `order`
    (S, P, M), which is encoded as UniLM's target spells it: parts ended by [SEP]."""

    def __init__(self, train_questions: list[str], kb: KnowledgeBase, order: str):
        added = [s for key in kb.added for s in (key.subject, key.predicate, key.meaning)]
        changed = [o for objects in kb.changed.values() for o in objects]
        self.sources = [train_questions, *kb.tables, added, kb.object_strings, changed]
        self.keys, self.order = kb.keys, order
        self.starts = np.cumsum([0] + [len(s) for s in [*self.sources, self.keys]])

    def __len__(self) -> int:
        return int(self.starts[-1])

    def item(self, i: int) -> tuple[str, ...]:
        source = int(np.searchsorted(self.starts, i, side="right")) - 1
        if source == len(self.sources):
            return self.keys[i - int(self.starts[source])].parts(self.order)
        return (self.sources[source][i - int(self.starts[source])],)


def characters(train_questions: list[str], kb: KnowledgeBase) -> list[str]:
    """Every character of the pre-training texts, sorted: the KB's strings (kb.characters, what kgqa-train's
    vocabulary covers), its objects and the training questions; found with numpy, not per string."""
    arrays = [kb.object_strings.array, as_strings(train_questions + [o for objs in kb.changed.values() for o in objs])]
    points = np.unique(np.concatenate([code_points(a)[0] for a in arrays]))
    return sorted(set(kb.characters()) | {chr(c) for c in points.tolist()})


def is_cjk(char: str) -> bool:
    return any(low <= ord(char) <= high for low, high in CJK_RANGES)


def write_tokenizer(folder: Path, chars: list[str]) -> BertTokenizerFast:
    """vocab.txt ([PAD] [UNK] [CLS] [SEP] [MASK], then one character a line, then "##" continuations of the
    characters WordPiece reads inside words) and the BERT tokenizer files, not lower-casing. Whitespace
    cannot be a line of vocab.txt (BERT's reader strips it): kgqa-train adds it as it adds any character
    a vocabulary lacks, and pre-training reads it as [UNK]."""
    kept = [c for c in chars if not c.isspace()]
    vocab = [*SPECIAL_TOKENS, MASK, *kept, *(f"##{c}" for c in kept if not is_cjk(c))]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tokenizer = BertTokenizerFast(vocab=str(folder / "vocab.txt"), do_lower_case=False)
    tokenizer.save_pretrained(folder)
    return tokenizer


class MaskedTexts:
    """Collate texts into a masked-LM batch: "[CLS] part [SEP] part [SEP] ..." in kgqa's own one-character-a-token
    encoding (PretrainedTokenizer: the ids kgqa-train will use), cut to max_len, then masked by
    DataCollatorForLanguageModeling (never [CLS], [SEP], [UNK] or padding)."""

    def __init__(self, tokenizer: PretrainedTokenizer, masker: DataCollatorForLanguageModeling, max_len: int):
        self.tokenizer, self.masker, self.max_len = tokenizer, masker, max_len

    def encode(self, parts: tuple[str, ...]) -> list[int]:
        return ([self.tokenizer.cls_id] + encode_parts(self.tokenizer, parts))[: self.max_len]

    def __call__(self, texts: list[tuple[str, ...]]) -> dict[str, torch.Tensor]:
        return self.masker([{"input_ids": self.encode(parts)} for parts in texts])


class MaskedLanguageModel(L.LightningModule):
    """The backbone of `backbone` (conf/backbone/ with a size) under its architecture's masked-LM head,
    bidirectional (is_decoder=False); its LM head and embeddings are tied, as UniLM's are."""

    def __init__(self, vocab_size: int, backbone: dict, optim: dict, scheduler: dict):
        super().__init__()
        self.save_hyperparameters()
        size = {k: v for k, v in backbone.items() if k not in ("arch", "pretrained")}
        config = backbone_config(backbone["arch"], vocab_size, is_decoder=False, **size)
        self.model = MASKED_LM[backbone["arch"]](config)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = self.model(**batch).loss
        self.log("train/mlm_loss", loss, prog_bar=True, batch_size=len(batch["input_ids"]))
        return loss

    def configure_optimizers(self):
        return optimizer_and_schedule(self, self.hparams.optim, self.hparams.scheduler)


def pretrain_into(folder: Path, texts: PretrainingTexts, chars: list[str], module_settings: dict,
                  trainer: L.Trainer, batch_size: int, mask_rate: float, max_len: int, seed: int) -> None:
    """Write the tokenizer files into `folder`, pre-train on `texts`, then save the model there (rank 0)."""
    hf_tokenizer = write_tokenizer(folder, chars)
    tokenizer = PretrainedTokenizer(str(folder))
    masker = DataCollatorForLanguageModeling(hf_tokenizer, mlm_probability=mask_rate)
    loader = DataLoader(texts, batch_size=batch_size, shuffle=True, collate_fn=MaskedTexts(tokenizer, masker, max_len),
                        generator=torch.Generator().manual_seed(seed))
    module = MaskedLanguageModel(tokenizer.vocab_size, **module_settings)
    log.info("pre-training on %d texts, a %d-token vocabulary", len(texts), tokenizer.vocab_size)
    trainer.fit(module, loader)
    if trainer.is_global_zero:
        module.model.save_pretrained(folder)
