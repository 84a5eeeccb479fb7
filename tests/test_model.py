"""The UniLM: its attention mask, the information flow it allows, and padding invariance.

Note on the mask format (the transformers-5 trap): the model passes the backbone a 4D
*additive float* mask [B, 1, T, T] (0 = attend, -inf = blocked), which transformers 5
encoders take as is. A 3D mask [B, T, T] raises inside the mask preparation (an expand
with the wrong number of sizes), and a 4D *bool* mask is accepted silently but gives
different outputs in eager RoFormer (it is treated as an additive 0/1 mask there),
so the float format is part of the contract tested below.
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import BertConfig, BertModel, RoFormerConfig, RoFormerModel

from kgqa.model import DecodingCache, UniLM, build_backbone, unilm_attention_mask

VOCAB = 24
PAD = 0
SIZE = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
ARCHS = ["bert", "roformer"]




def make_model(arch: str, seed: int = 0, copy: bool = False) -> UniLM:
    torch.manual_seed(seed)
    model = UniLM(build_backbone(arch, VOCAB, **SIZE), copy=copy).eval()
    with torch.no_grad():  # a non-zero LM bias so it takes part in the comparisons
        model.lm_bias.normal_()
    return model


def batch(rows, width=None, left=False):
    """rows: (question_len, target_len) per row → ids, segments, valid, padded right (training) or left."""
    width = width or max(q + t for q, t in rows)
    g = torch.Generator().manual_seed(1)
    ids = torch.full((len(rows), width), PAD, dtype=torch.long)
    seg = torch.zeros_like(ids)
    valid = torch.zeros_like(ids, dtype=torch.bool)
    for i, (q, t) in enumerate(rows):
        start = width - q - t if left else 0
        ids[i, start : start + q + t] = torch.randint(4, VOCAB, (q + t,), generator=g)
        seg[i, start + q : start + q + t] = 1
        valid[i, start : start + q + t] = True
    return ids, seg, valid


ROWS = [(5, 4), (3, 2), (4, 0), (6, 5)]  # with a row without target and padding of several lengths


# --- the mask itself -----------------------------------------------------------------------
@pytest.mark.parametrize("left", [False, True], ids=["right-padded", "left-padded"])
def test_mask_allows_exactly_the_unilm_pattern(left):
    ids, seg, valid = batch(ROWS, width=13, left=left)
    mask = unilm_attention_mask(seg, valid, torch.float32)
    assert mask.shape == (len(ROWS), 1, 13, 13)
    allowed = mask[:, 0] == 0
    B, T = seg.shape
    for b in range(B):
        for i in range(T):
            if not valid[b, i]:
                continue
            for j in range(T):
                a = bool(allowed[b, i, j])
                if not valid[b, j]:
                    assert not a, "a real token attends to padding"
                elif seg[b, i] == 0:
                    assert a == (seg[b, j] == 0), "question tokens see the whole question and no target"
                else:
                    assert a == (seg[b, j] == 0 or j <= i), "target t sees the question and targets <= t"
        # every row (padding too) can attend somewhere, so softmax never sees an all -inf row
        assert allowed[b].any(-1).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_mask_is_additive_float(dtype):
    _, seg, valid = batch(ROWS, width=12)
    mask = unilm_attention_mask(seg, valid, dtype)
    assert mask.dim() == 4 and mask.dtype == dtype and mask.is_floating_point()
    zero, blocked = mask == 0, mask == float("-inf")
    assert (zero | blocked).all()
    assert zero.any() and blocked.any()


# --- information flow through real backbones -----------------------------------------------
@pytest.mark.parametrize("arch", ARCHS)
def test_target_token_only_affects_later_positions(arch):
    model = make_model(arch)
    ids, seg, valid = batch(ROWS, width=13)
    with torch.no_grad():
        base = model(ids, seg, valid)
        assert base.shape == (len(ROWS), 13, VOCAB)
        for b, (q, t_len) in enumerate(ROWS):
            for t in range(q, q + t_len):
                changed = ids.clone()
                changed[b, t] = 4 + (changed[b, t] - 4 + 7) % (VOCAB - 4)
                out = model(changed, seg, valid)
                torch.testing.assert_close(out[b, :t], base[b, :t], atol=1e-5, rtol=0)  # question and earlier targets
                assert (out[b, t] - base[b, t]).abs().max() > 1e-3  # the changed position itself does change
                other = [r for r in range(len(ROWS)) if r != b]
                torch.testing.assert_close(out[other], base[other], atol=1e-5, rtol=0)


@pytest.mark.parametrize("arch", ARCHS)
def test_question_token_affects_all_real_positions(arch):
    """The converse: question attention is bidirectional, so the first question token reaches everyone."""
    model = make_model(arch)
    ids, seg, valid = batch(ROWS, width=13)
    with torch.no_grad():
        base = model(ids, seg, valid)
        changed = ids.clone()
        changed[:, 1] = 4 + (changed[:, 1] - 4 + 5) % (VOCAB - 4)
        out = model(changed, seg, valid)
    diff = (out - base).abs().amax(-1)
    assert (diff[valid] > 1e-4).all()


@pytest.mark.parametrize("left", [False, True], ids=["right-padded", "left-padded"])
@pytest.mark.parametrize("arch", ARCHS)
def test_padding_changes_nothing_for_real_tokens(arch, left):
    model = make_model(arch)
    ids, seg, valid = batch(ROWS, width=13, left=left)
    with torch.no_grad():
        base = model(ids, seg, valid)
        changed = ids.clone()
        changed[~valid] = torch.randint(4, VOCAB, (int((~valid).sum()),), generator=torch.Generator().manual_seed(3))
        out = model(changed, seg, valid)
        assert not torch.equal(changed, ids)
        torch.testing.assert_close(out[valid], base[valid], atol=1e-5, rtol=0)


@pytest.mark.parametrize("arch", ARCHS)
def test_left_padding_invariance(arch):
    """Decoding left-pads questions: '[PAD][PAD] q target' must score like 'q target'."""
    model = make_model(arch)
    ids, seg, valid = batch([(6, 3)])
    pad = 2
    ids_l = torch.cat([torch.full((1, pad), PAD), ids], 1)
    seg_l = torch.cat([torch.zeros(1, pad, dtype=torch.long), seg], 1)
    valid_l = torch.cat([torch.zeros(1, pad, dtype=torch.bool), valid], 1)
    with torch.no_grad():
        plain = model(ids, seg, valid)
        padded = model(ids_l, seg_l, valid_l)
    torch.testing.assert_close(padded[:, -1], plain[:, -1], atol=1e-5, rtol=0)
    torch.testing.assert_close(padded[:, pad:], plain, atol=1e-5, rtol=0)


@pytest.mark.parametrize("arch", ARCHS)
def test_left_padded_batch_equals_rows_alone(arch):
    """Beam search runs questions of different lengths together, left-padded to one width."""
    model = make_model(arch)
    rows = [(7, 2), (3, 2), (5, 2)]
    ids, seg, valid = batch(rows, left=True)
    with torch.no_grad():
        together = model(ids, seg, valid)
        for b, (q, t) in enumerate(rows):
            alone = model(ids[b : b + 1, valid[b]], seg[b : b + 1, valid[b]], valid[b : b + 1, valid[b]])
            torch.testing.assert_close(together[b, valid[b]], alone[0], atol=1e-5, rtol=0)


@pytest.mark.parametrize("copy", [False, True], ids=["lm-head", "copy-head"])
@pytest.mark.parametrize("arch", ARCHS)
def test_incremental_decoding_equals_full_recompute(arch, copy):
    """start + extend (the KV cache) give the step scores forward gives on the whole sequence, with
    left-padded questions and the cache rows reordered between steps as beam search does (with a copy
    head, its question memory follows the rows too)."""
    model = make_model(arch, copy=copy)
    ids, seg, valid = batch([(7, 0), (3, 0), (5, 0)], left=True)
    steps = [  # (rows: row i continues old row rows[i], new tokens)
        ([0, 0, 1, 1, 2, 2], [5, 6, 7, 8, 9, 10]),  # each question's row becomes two beams
        ([1, 0, 2, 2, 5, 4], [11, 12, 13, 14, 15, 16]),  # beams move within their questions
        ([0, 1, 2, 3, 4, 5], [17, 18, 19, 20, 21, 22]),  # nothing moves
        ([4, 4, 0, 1], [5, 7, 9, 11]),  # question 1 is done, question 2 drops a beam and doubles the other
        ([1, 0, 3, 2], [6, 8, 10, 12]),  # swaps within the questions left
        ([2, 3, 0, 1], [13, 14, 15, 16]),  # as many rows as before, but the questions trade places
        ([2, 0, 1], [17, 18, 19]),  # rows 0 and 2 take another question's place, row 1 its own question's old row 0
        ([0, 2], [20, 21]),  # the last row is cut off, row 1 moves within its question
    ] + [([0, 1], [4 + i % (VOCAB - 4)] * 2) for i in range(DecodingCache.ROOM)]  # past the buffers' room
    with torch.no_grad():
        logits, cache = model.start(ids, valid)
        q_ids, q_valid, prefixes, picked = ids, valid, torch.zeros(3, 0, dtype=torch.long), torch.arange(3)
        for step, (rows, tokens) in enumerate([(None, None)] + steps):
            if rows is not None:
                cache.reorder(np.array(rows))
                q_ids, q_valid, prefixes = q_ids[rows], q_valid[rows], prefixes[rows]
                picked = torch.arange(len(rows)).flip(0)[step % 2 :]  # logits for the rows asked for, in that order
                logits = model.extend(torch.tensor(tokens), cache, picked)
                prefixes = torch.cat([prefixes, torch.tensor(tokens)[:, None]], 1)
            full = model(torch.cat([q_ids, prefixes], 1), torch.cat([torch.zeros_like(q_ids), torch.ones_like(prefixes)], 1),
                         torch.cat([q_valid, torch.ones_like(prefixes, dtype=torch.bool)], 1))[:, -1]
            torch.testing.assert_close(logits, full[picked], atol=1e-4, rtol=1e-5)
    assert model.backbone.config.is_decoder  # what lets BERT keep a cache; the 4D mask keeps attention UniLM's


def test_bert_positions_matter():
    """Sanity for the invariance tests: BERT's absolute positions do change outputs when shifted,
    so the invariance above comes from the model counting positions over valid tokens only."""
    model = make_model("bert")
    ids, seg, valid = batch([(6, 3)])
    mask = unilm_attention_mask(seg, valid, torch.float32)
    with torch.no_grad():
        h0 = model.backbone(input_ids=ids, token_type_ids=seg, attention_mask=mask).last_hidden_state
        h2 = model.backbone(input_ids=ids, token_type_ids=seg, attention_mask=mask,
                            position_ids=torch.arange(2, 2 + ids.shape[1])[None]).last_hidden_state
    assert (h0 - h2).abs().max() > 1e-3


# --- the head and the loss -----------------------------------------------------------------
@pytest.mark.parametrize("arch", ARCHS)
def test_lm_head_is_tied_to_input_embeddings(arch):
    model = make_model(arch)
    ids, seg, valid = batch(ROWS[:2])
    with torch.no_grad():
        hidden = model.backbone(input_ids=ids, token_type_ids=seg,
                                attention_mask=unilm_attention_mask(seg, valid, torch.float32),
                                **({"position_ids": (valid.long().cumsum(-1) - 1).clamp(min=0)} if arch == "bert" else {})
                                ).last_hidden_state
        expected = model.transform(hidden) @ model.backbone.get_input_embeddings().weight.T + model.lm_bias
        torch.testing.assert_close(model(ids, seg, valid), expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("arch", ARCHS)
def test_loss_is_cross_entropy_over_target_tokens(arch):
    model = make_model(arch)
    ids, seg, valid = batch(ROWS, width=13)
    with torch.no_grad():
        logits = model(ids, seg, valid)
        terms = []
        for b, (q, t_len) in enumerate(ROWS):
            for pos in range(q, q + t_len):  # target token at pos is predicted from position pos-1
                terms.append(-F.log_softmax(logits[b, pos - 1], -1)[ids[b, pos]])
        expected = torch.stack(terms).mean()
        torch.testing.assert_close(model.loss(ids, seg, valid), expected, atol=1e-5, rtol=0)
        smoothed = model.loss(ids, seg, valid, label_smoothing=0.1)
    assert smoothed.item() != pytest.approx(expected.item())


# --- backbones -------------------------------------------------------------------------------
def test_unknown_backbone():
    with pytest.raises(ValueError, match="unknown backbone"):
        build_backbone("gpt2", VOCAB, **SIZE)


@pytest.mark.parametrize("arch", ARCHS)
def test_build_backbone_size(arch):
    bb = build_backbone(arch, VOCAB, **SIZE)
    assert bb.config.hidden_size == 32 and bb.config.num_hidden_layers == 2 and bb.config.type_vocab_size == 2
    assert bb.get_input_embeddings().weight.shape == (VOCAB, 32)


@pytest.mark.parametrize(
    "arch, config_cls, model_cls",
    [("bert", BertConfig, BertModel), ("roformer", RoFormerConfig, RoFormerModel)],
)
def test_pretrained_weights_are_loaded(tmp_path, arch, config_cls, model_cls):
    torch.manual_seed(5)
    extra = {"embedding_size": 32} if arch == "roformer" else {}
    original = model_cls(config_cls(vocab_size=VOCAB, type_vocab_size=2, **SIZE, **extra))
    original.save_pretrained(tmp_path)
    loaded = build_backbone(arch, VOCAB, pretrained=str(tmp_path))
    assert type(loaded) is model_cls
    want = original.state_dict()
    got = loaded.state_dict()
    name = "embeddings.word_embeddings.weight"
    assert torch.equal(got[name], want[name])
    for k, v in got.items():
        assert torch.equal(v, want[k]), k
    # and it is not what a fresh random model would have
    fresh = build_backbone(arch, VOCAB, **SIZE)
    assert not torch.equal(fresh.state_dict()[name], want[name])
