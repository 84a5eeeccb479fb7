"""UniLM seq2seq on a transformers encoder.

One encoder reads "[CLS] question [SEP] target": attention is bidirectional over the
question (segment 0) and causal over the target (segment 1); an LM head tied to the
input embeddings predicts each next target token.

Decoding runs incrementally: question tokens never attend to the target, so their
keys and values are final once the question is encoded (`start`), and each step runs
only the new target token against the cache (`extend`): exactly the full recompute.

With a copy head (config model.copy) the step scores are the log-probabilities of a mixture of
the LM head's distribution and a pointer over the question's tokens (CopyHead): KgCLUE's subject,
and often its predicate, are pieces of the question, and a pointer copies even tokens the LM head
never learnt to produce. Downstream code takes log_softmax of the step scores either way, which
leaves normalised log-probabilities as they are.
"""
from __future__ import annotations

import inspect
import json
import logging
import math
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import (AutoConfig, BertConfig, BertForMaskedLM, BertModel, PretrainedConfig, PreTrainedModel,
                          RoFormerConfig, RoFormerForCausalLM, RoFormerModel)

from kgqa.errors import ConfigError

log = logging.getLogger(__name__)
ARCHITECTURES = {"bert": (BertConfig, BertModel), "roformer": (RoFormerConfig, RoFormerModel)}
WITH_LM_HEAD = {"bert": BertForMaskedLM, "roformer": RoFormerForCausalLM}  # the classes the hub folders name


def build_backbone(arch: str, vocab_size: int, pretrained: str | None = None, **size) -> PreTrainedModel:
    """A randomly initialised encoder of the given size, or pretrained weights via from_pretrained,
    their embeddings resized to `vocab_size` (the pretrained vocabulary plus the characters kgqa added).

    With pretrained weights the size comes from their config; the size preset is not applied.
    `is_decoder=True` only lets the encoder keep a KV cache (BERT ignores a cache otherwise);
    UniLM always passes its own 4D mask, so attention is the same either way.
    """
    model_cls = architecture(arch)[1]
    no_pooler = {"add_pooling_layer": False} if arch == "bert" else {}  # the pooler is unused
    if pretrained:
        found = AutoConfig.from_pretrained(pretrained, trust_remote_code=False).model_type
        if found != arch:  # from_pretrained would load nothing of it and say so only in a warning
            raise ConfigError(f"backbone.pretrained={pretrained} holds a {found} model, but backbone.arch={arch}; "
                              f"choose a backbone preset of {found} (conf/backbone/)")
        model = model_cls.from_pretrained(pretrained, trust_remote_code=False, is_decoder=True, **no_pooler)
        as_built_from_config(model, model_cls, **no_pooler)
        unused = {k: getattr(model.config, k) for k, v in size.items() if getattr(model.config, k, v) != v}
        if unused:
            log.info("backbone settings not applied to the pretrained model, which keeps its own: %s", unused)
        return resize_vocabulary(model, vocab_size)
    return model_cls(backbone_config(arch, vocab_size, **size), **no_pooler)


def as_built_from_config(model: PreTrainedModel, model_cls: type, **kwargs) -> None:
    """Give a from_pretrained model the state a model built from its config starts in: from_pretrained
    returns it in eval mode (no dropout) and makes every parameter trainable, also those the architecture
    freezes (RoFormer's sinusoidal position table), which training would then move."""
    with torch.device("meta"):
        frozen = {name for name, p in model_cls(model.config, **kwargs).named_parameters() if not p.requires_grad}
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(name not in frozen)
    model.train()


def architecture(arch: str) -> tuple[type, type]:
    """The config and encoder classes of `arch`."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown backbone {arch!r}; choose one of {sorted(ARCHITECTURES)}")
    return ARCHITECTURES[arch]


def backbone_config(arch: str, vocab_size: int, is_decoder: bool = True, **size) -> PretrainedConfig:
    """A fresh encoder's config: two segments (UniLM's question and target), RoFormer's embeddings as wide
    as its hidden states; is_decoder=False for a bidirectional masked LM (kgqa.pretrain)."""
    if arch == "roformer":
        size.setdefault("embedding_size", size["hidden_size"])
    return architecture(arch)[0](vocab_size=vocab_size, type_vocab_size=2, is_decoder=is_decoder, **size)


def resize_vocabulary(model: PreTrainedModel, vocab_size: int) -> PreTrainedModel:
    """Grow (or cut) the embeddings, and so the tied LM head (UniLM._logits), to `vocab_size`.
    New rows are drawn around the existing ones (their mean and covariance, transformers'
    mean_resizing), not zeros: a new character starts as a plausible, distinct token."""
    before = model.get_input_embeddings().num_embeddings
    if vocab_size != before:
        model.resize_token_embeddings(vocab_size, mean_resizing=True)
        log.info("embeddings resized from %d to %d tokens (%+d)", before, vocab_size, vocab_size - before)
    return model


def load_pretrained_head(model: "UniLM", arch: str, pretrained: str) -> None:
    """Predict with the pretrained LM head, as the article's UniLM does (bert4keras' unilm application keeps
    the MLM head): its transform into UniLM.transform, its output bias into lm_bias, the characters kgqa
    added starting at the mean bias. A folder without a head keeps the fresh one (logged)."""
    lm, loading = WITH_LM_HEAD[arch].from_pretrained(pretrained, trust_remote_code=False, output_loading_info=True)
    if any(key.startswith("cls.predictions.transform") for key in loading["missing_keys"]):
        log.info("%s holds no LM head: the UniLM head starts fresh", pretrained)
        return
    head = lm.cls.predictions
    with torch.no_grad():
        model.transform[0].load_state_dict(head.transform.dense.state_dict())
        model.transform[2].load_state_dict(head.transform.LayerNorm.state_dict())
        model.lm_bias[: len(head.bias)] = head.bias
        model.lm_bias[len(head.bias) :] = head.bias.mean()


def save_pretrained(model: "UniLM", arch: str, tokens: list[str], lower_case: bool, folder: str | Path) -> Path:
    """Write `model` as a Hugging Face folder that backbone.pretrained= reads back to the same UniLM: the
    backbone under its architecture's LM head (WITH_LM_HEAD) holding UniLM's transform and output bias,
    vocab.txt (`tokens`, one per id) and a tokenizer_config.json with its casing and special tokens. The copy
    head is not kept."""
    if any(t != t.strip() or not t for t in tokens):
        raise ConfigError(f"{folder}: a vocab.txt line cannot hold whitespace; this vocabulary has "
                          f"{sum(t != t.strip() or not t for t in tokens)} such token(s)")
    lm = WITH_LM_HEAD[arch](model.backbone.config)
    getattr(lm, lm.base_model_prefix).load_state_dict(model.backbone.state_dict(), strict=False)
    head = lm.cls.predictions
    head.transform.dense.load_state_dict(model.transform[0].state_dict())
    head.transform.LayerNorm.load_state_dict(model.transform[2].state_dict())
    with torch.no_grad():
        head.bias.copy_(model.lm_bias)
    folder = Path(folder)
    lm.save_pretrained(folder)
    (folder / "vocab.txt").write_text("\n".join(tokens) + "\n", encoding="utf-8")
    specials = {f"{name}_token": f"[{name.upper()}]" for name in ("pad", "unk", "cls", "sep", "mask")}
    settings = {"tokenizer_class": "BertTokenizer", "do_lower_case": lower_case,  # no special token it lacks:
                **{k: v if v in tokens else None for k, v in specials.items()}}  # BertTokenizer would add it
    (folder / "tokenizer_config.json").write_text(json.dumps(settings), encoding="utf-8")
    return folder


def unilm_attention_mask(segment_ids: torch.Tensor, valid: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Additive [B, 1, T, T] mask: 0 where query i may attend key j, -inf elsewhere.

    transformers 5 encoders take a 4D float mask as is; a 3D mask raises and a 4D bool
    mask is read differently by some attention implementations (eager RoFormer).
    """
    T = segment_ids.shape[1]
    causal = torch.ones(T, T, dtype=torch.bool, device=segment_ids.device).tril()
    is_target = segment_ids.bool()
    allowed = ~is_target[:, None, :] | (is_target[:, :, None] & causal)  # key in question, or causal within target
    allowed &= valid[:, None, :]
    allowed |= torch.eye(T, dtype=torch.bool, device=segment_ids.device)  # padding rows see themselves: no NaN
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(~allowed, float("-inf"))[:, None]


class CopyMemory(NamedTuple):
    """What the copy head reads of each row's question: its pointer keys, token ids and which tokens
    may be copied (the valid question tokens other than [CLS] and [SEP])."""

    keys: torch.Tensor  # [rows, Lq, H]
    ids: torch.Tensor  # [rows, Lq]
    content: torch.Tensor  # [rows, Lq] bool

    def rows(self, index: torch.Tensor) -> "CopyMemory":
        return CopyMemory(*(t[index] for t in self))


class CopyHead(nn.Module):
    """A pointer over the question's tokens mixed into the LM head's distribution:
    p(v) = g · softmax(logits)[v] + (1 − g) · Σ_j attn_j [question token j == v], with
    attn = softmax_j((W_q h_t) · (W_k h_j) / √d) over the copyable question tokens j and
    g = sigmoid(w · h_t + b). Computed in log space (float32): every token keeps a finite score."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.query = nn.Linear(hidden_size, hidden_size)
        self.key = nn.Linear(hidden_size, hidden_size)
        self.gate = nn.Linear(hidden_size, 1)

    def memory(self, hidden: torch.Tensor, ids: torch.Tensor, question: torch.Tensor) -> CopyMemory:
        """From the final hidden states [B, L, H] of sequences whose question tokens are `question` [B, L]
        (bool; anywhere in the row): its first and last are [CLS] and [SEP], never copied."""
        counted = question.long().cumsum(-1)
        return CopyMemory(self.key(hidden), ids, question & (counted > 1) & (counted < counted[:, -1:]))

    def forward(self, logits: torch.Tensor, hidden: torch.Tensor, memory: CopyMemory) -> torch.Tensor:
        """Log-probabilities [B, T, V] (or [B, V] for hidden [B, H]) of the mixture at each position."""
        if hidden.dim() == 2:
            return self(logits[:, None], hidden[:, None], memory)[:, 0]
        content = memory.content[:, None]  # [B, 1, Lq]
        similarity = self.query(hidden) @ memory.keys.transpose(1, 2) / math.sqrt(hidden.shape[-1])
        similarity = similarity.float().masked_fill(~content, torch.finfo(torch.float32).min)
        attention = similarity.softmax(-1) * content  # all 0 for a question with nothing to copy
        copy = logits.new_zeros(logits.shape, dtype=torch.float32)
        copy.scatter_add_(-1, memory.ids[:, None].expand_as(attention), attention)
        gate, can_copy = self.gate(hidden).float(), content.any(-1, keepdim=True)
        log_gate = torch.where(can_copy, F.logsigmoid(gate), 0.0)
        log_copy_share = torch.where(can_copy, F.logsigmoid(-gate), float("-inf"))
        tiny = torch.finfo(torch.float32).tiny  # log(0) would be -inf with an infinite gradient
        return torch.logaddexp(log_gate + F.log_softmax(logits.float(), -1), log_copy_share + copy.clamp_min(tiny).log())


class DecodingCache:
    """Per decoding row: its question's padding and, for every layer, the keys and values of all
    its tokens so far. The encoder reads and appends them through `get_seq_length` and `update`
    (what transformers' BERT and RoFormer ask of a cache).

    Buffers keep room to grow, so a step writes only its new column; and since the rows of one
    question share its question columns, a reorder that keeps rows within their questions moves
    only the target columns.
    """

    ROOM = 8  # columns added when a buffer is full

    def __init__(self, question_valid: torch.Tensor):
        self.question_valid = question_valid  # [rows, Lq]
        self.question_of_row = np.arange(len(question_valid))
        self.copy_memory: CopyMemory | None = None  # per row, with a copy head
        self.keys: list[torch.Tensor] = []  # per layer [rows, heads, capacity, head size]
        self.values: list[torch.Tensor] = []
        self.lengths: list[int] = []  # filled columns per layer

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.lengths[layer_idx] if layer_idx < len(self.lengths) else 0

    def update(self, keys: torch.Tensor, values: torch.Tensor, layer_idx: int, *args, **kwargs):
        if layer_idx == len(self.lengths):
            self.keys.append(keys[:, :, :0])
            self.values.append(values[:, :, :0])
            self.lengths.append(0)
        start, end = self.lengths[layer_idx], self.lengths[layer_idx] + keys.shape[2]
        for store, new in ((self.keys, keys), (self.values, values)):
            if end > store[layer_idx].shape[2]:
                grown = new.new_empty(*new.shape[:2], end + self.ROOM, new.shape[3])
                grown[:, :, :start] = store[layer_idx][:, :, :start]
                store[layer_idx] = grown
            store[layer_idx][:, :, start:end] = new
        self.lengths[layer_idx] = end
        return self.keys[layer_idx][:, :, :end], self.values[layer_idx][:, :, :end]

    def reorder(self, rows: np.ndarray) -> None:
        """Row i continues old row rows[i]: beams move and multiply, finished questions drop out.

        In place when the rows do not multiply: a row that stays with its question moves only its
        target columns, a row that takes another question's place moves whole, and the rows past
        the new count are cut off (a view); beam search fills a finished question's place from the
        end of the batch, so most rows stay where they are."""
        n, device = len(rows), self.question_valid.device
        if n > len(self.question_of_row):  # beams multiply: every row is new
            index = torch.from_numpy(rows).to(device)
            for store in (self.keys, self.values):
                store[:] = [buffer[index] for buffer in store]
        else:
            moved = np.flatnonzero(rows != np.arange(n))
            same_question = self.question_of_row[rows[moved]] == self.question_of_row[moved]
            first = self.question_valid.shape[1]  # the question columns, shared by a question's rows
            moves = [(torch.from_numpy(to).to(device), torch.from_numpy(rows[to]).to(device), start)
                     for to, start in ((moved[same_question], first), (moved[~same_question], 0)) if len(to)]
            for store in (self.keys, self.values):
                for layer, length in enumerate(self.lengths):
                    sources = [store[layer][src, :, start:length] for _, src, start in moves]  # all read before any write
                    for (to, _, start), source in zip(moves, sources):
                        store[layer][to, :, start:length] = source
                    store[layer] = store[layer][:n]
        index = torch.from_numpy(rows).to(device)
        self.question_valid = self.question_valid[index]
        self.question_of_row = self.question_of_row[rows]
        if self.copy_memory is not None:
            self.copy_memory = self.copy_memory.rows(index)


class UniLM(nn.Module):
    def __init__(self, backbone: PreTrainedModel, copy: bool = False):
        super().__init__()
        self.backbone = backbone
        cfg = backbone.config
        width = backbone.get_input_embeddings().embedding_dim
        self.transform = nn.Sequential(nn.Linear(cfg.hidden_size, width), nn.GELU(), nn.LayerNorm(width, eps=cfg.layer_norm_eps))
        self.lm_bias = nn.Parameter(torch.zeros(cfg.vocab_size))
        self.copy_head = CopyHead(cfg.hidden_size) if copy else None
        self._takes_positions = "position_ids" in inspect.signature(backbone.forward).parameters

    def forward(self, input_ids: torch.Tensor, segment_ids: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """Step scores [B, T, V]: logits, or with a copy head its mixture's log-probabilities.
        Padding may sit anywhere (left-padded questions at decode time):
        absolute positions count valid tokens only; rotary ones are shift-invariant."""
        hidden, memory = self._read(input_ids, segment_ids, valid)
        return self._scores(hidden, memory)

    def target_scores(self, input_ids: torch.Tensor, segment_ids: torch.Tensor, valid: torch.Tensor,
                      read_soft: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """forward's step scores [N, V] at the N positions that predict a target token (row-major), those
        tokens [N] and their rows [N]: the heads run on these positions only, not on the question's.
        `read_soft` [N, V]: distributions read in place of the target tokens (each predicted one is read as
        its expected embedding; TeaForN), numbered as the scores."""
        rows, columns = target_positions(segment_ids, valid)
        embeddings = None
        if read_soft is not None:
            table = self.backbone.get_input_embeddings()
            embeddings = table(input_ids).index_put((rows, columns + 1), read_soft.to(table.weight.dtype) @ table.weight)
        hidden, memory = self._read(input_ids, segment_ids, valid, embeddings)
        scores = self._scores(hidden[rows, columns], None if memory is None else memory.rows(rows))
        return scores, input_ids[rows, columns + 1], rows

    def _read(self, input_ids: torch.Tensor, segment_ids: torch.Tensor, valid: torch.Tensor,
              embeddings: torch.Tensor | None = None) -> tuple[torch.Tensor, CopyMemory | None]:
        """The encoder's final hidden states [B, T, H] (reading `embeddings` [B, T, H] in place of the
        ids' when given) and, with a copy head, its memory of the questions."""
        mask = unilm_attention_mask(segment_ids, valid, self._mask_dtype)
        positions = (valid.long().cumsum(-1) - 1).clamp(min=0)
        hidden = self._encode(input_ids, segment_ids, mask, positions, cache=None, embeddings=embeddings)
        return hidden, self.copy_head.memory(hidden, input_ids, (segment_ids == 0) & valid) if self.copy_head else None

    @property
    def _mask_dtype(self) -> torch.dtype:
        return self.backbone.get_input_embeddings().weight.dtype

    def _encode(self, input_ids, segment_ids, mask, positions, cache: DecodingCache | None,
                embeddings: torch.Tensor | None = None) -> torch.Tensor:
        extra = {"position_ids": positions} if self._takes_positions else {}  # rotary encoders count from the cache
        read = {"input_ids": input_ids} if embeddings is None else {"inputs_embeds": embeddings}
        return self.backbone(**read, token_type_ids=segment_ids, attention_mask=mask, cache=cache,
                             use_cache=cache is not None, **extra).last_hidden_state

    def _logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return F.linear(self.transform(hidden), self.backbone.get_input_embeddings().weight, self.lm_bias)

    def _scores(self, hidden: torch.Tensor, memory: CopyMemory | None) -> torch.Tensor:
        """The LM head's logits, or with a copy head (and its `memory` of the questions) the mixture."""
        logits = self._logits(hidden)
        return logits if memory is None else self.copy_head(logits, hidden, memory)

    # --- incremental decoding ----------------------------------------------------------
    def start(self, question_ids: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, DecodingCache]:
        """Encode left-padded "[CLS] q [SEP]" rows [B, Lq] once: the step scores [B, V] for the first
        target token, and the cache holding the questions' keys and values (one row each)
        and, with a copy head, what it reads of the questions."""
        cache = DecodingCache(valid)
        mask = unilm_attention_mask(torch.zeros_like(question_ids), valid, self._mask_dtype)
        positions = (valid.long().cumsum(-1) - 1).clamp(min=0)
        hidden = self._encode(question_ids, torch.zeros_like(question_ids), mask, positions, cache)
        if self.copy_head:
            cache.copy_memory = self.copy_head.memory(hidden, question_ids, valid)
        return self._scores(hidden[:, -1], cache.copy_memory), cache

    def extend(self, tokens: torch.Tensor, cache: DecodingCache, rows: torch.Tensor | None = None) -> torch.Tensor:
        """Append one target token per cache row [N]: the step scores [N, V] for the next one
        (only for `rows`, when given: the LM head is a large part of a small model's work)."""
        question_valid = cache.question_valid
        decoded = cache.get_seq_length() - question_valid.shape[1]  # target tokens already in the cache
        keys_visible = torch.cat([question_valid, question_valid.new_ones(len(tokens), decoded + 1)], 1)
        mask = torch.zeros(keys_visible.shape, dtype=self._mask_dtype, device=tokens.device)
        mask = mask.masked_fill(~keys_visible, float("-inf"))[:, None, None, :]
        positions = question_valid.sum(-1, keepdim=True) + decoded  # as in forward: the valid tokens before it
        segments = torch.ones_like(tokens[:, None])
        hidden = self._encode(tokens[:, None], segments, mask, positions, cache)[:, -1]
        memory = cache.copy_memory
        if rows is not None:
            hidden, memory = hidden[rows], None if memory is None else memory.rows(rows)
        return self._scores(hidden, memory)

    def loss(self, input_ids: torch.Tensor, segment_ids: torch.Tensor, valid: torch.Tensor, label_smoothing: float = 0.0,
             trie_weight: float = 0.0, allowed: torch.Tensor | None = None,
             vocabulary: torch.Tensor | None = None) -> torch.Tensor:
        """Teacher-forced cross-entropy on target tokens only (each predicts the next): teacher_forced_loss."""
        scores, targets, _ = self.target_scores(input_ids, segment_ids, valid)
        return teacher_forced_loss(scores, targets, label_smoothing, trie_weight, allowed, vocabulary)

    def key_log_probs(self, input_ids: torch.Tensor, segment_ids: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """[B] each row's log-probability of its target tokens under the model's full-vocabulary step
        distributions, teacher-forced: the score decode.renormalise=false gives a key."""
        logits, targets, rows = self.target_scores(input_ids, segment_ids, valid)
        token_log_probs = torch.log_softmax(logits.float(), -1).gather(1, targets[:, None])[:, 0]
        return token_log_probs.new_zeros(len(input_ids)).index_add_(0, rows, token_log_probs)

    def candidate_loss(self, input_ids: torch.Tensor, segment_ids: torch.Tensor, valid: torch.Tensor,
                       present: torch.Tensor) -> torch.Tensor:
        """Sequence-level cross-entropy: each question's gold key (its first candidate row) against the
        other keys of the trie beside it (`present` [B, C] marks the rows that hold one), the keys scored
        by key_log_probs. Teacher forcing never shows the model a wrong prefix; here it learns what its
        own probabilities of a look-alike key's forced rest should be (主要成就 for 主讲课程)."""
        scores = self.key_log_probs(input_ids, segment_ids, valid).view(present.shape)
        scores = scores.masked_fill(~present, float("-inf"))
        return F.cross_entropy(scores, scores.new_zeros(len(scores), dtype=torch.long))


def target_positions(segment_ids: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows, columns) of the positions that predict a target token, row-major; the token sits one column on."""
    return ((segment_ids[:, 1:] == 1) & valid[:, 1:]).nonzero(as_tuple=True)


def teacher_forced_loss(scores: torch.Tensor, targets: torch.Tensor, label_smoothing: float = 0.0,
                        trie_weight: float = 0.0, allowed: torch.Tensor | None = None,
                        vocabulary: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy of the step scores [N, V] at the target positions against their tokens [N].

    With `trie_weight` > 0, that share of the loss is the cross-entropy over the tokens the trie
    allows at each target position (`allowed`: (position, token) pairs, positions numbered over the
    target tokens in row-major order): decoding only ever compares those, so training spends its
    gradient on telling a key's look-alike siblings (主讲课程 vs 主要成就) apart. The cross-entropies take
    log_softmax of the step scores, which leaves a copy head's log-probabilities as they are.

    `vocabulary` (sorted token ids, kgqa.datamodule.loss_vocabulary): the softmax runs over these tokens only,
    the characters of the data; a pretrained vocabulary's thousands of others would otherwise take gradient."""
    if vocabulary is not None:
        scores, targets = scores[:, vocabulary], in_vocabulary(vocabulary, targets)
        if allowed is not None:
            allowed = torch.stack([allowed[:, 0], in_vocabulary(vocabulary, allowed[:, 1])], 1)
    loss = F.cross_entropy(scores, targets, label_smoothing=label_smoothing)
    if trie_weight:
        loss = (1 - trie_weight) * loss + trie_weight * trie_cross_entropy(scores, targets, allowed)
    return loss


def in_vocabulary(vocabulary: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Each token's index in `vocabulary` (sorted ids); a token outside it is a bug of whoever built it."""
    index = torch.searchsorted(vocabulary, tokens).clamp_max(len(vocabulary) - 1)
    if not torch.equal(vocabulary[index], tokens):
        raise ValueError("a target token lies outside the loss vocabulary")
    return index


def trie_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of logits [N, V] renormalised over the allowed (position, token) pairs [K, 2];
    positions whose target is not among their allowed tokens (a key not in the trie) are left out."""
    mask = torch.zeros_like(logits, dtype=torch.bool)
    mask[allowed[:, 0], allowed[:, 1]] = True
    rows = mask[torch.arange(len(targets), device=targets.device), targets]
    if not rows.any():
        return logits[:0].sum()
    masked = logits[rows].masked_fill(~mask[rows], float("-inf"))
    return F.cross_entropy(masked, targets[rows])
