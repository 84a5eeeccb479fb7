"""Trie-constrained beam search with look-ahead, on real (tiny, random or hand-set) UniLMs."""
import math
import random

import numpy as np
import pytest
import torch

from kgqa.kb.columns import KnowledgeBase
from kgqa.data.tokenizer import CharTokenizer, encode_key, encode_question
from kgqa.data.triples import Key, Triple
from kgqa.datamodule import teacher_forcing
from kgqa.decoding.answerer import Answerer
from kgqa.decoding.beam import beam_search, fill_from_the_end
from kgqa.decoding.mask import step_context, trie_mask
from kgqa.decoding.processors import LcsBonusLookahead, LcsLookahead, LcsPowerLookahead, MeaningEvidence, SubjectCopy
from kgqa.kb.keyspace import KeySpace
from kgqa.model import UniLM, build_backbone
from kgqa.reference import NaiveDecoder, lcs
from models import unigram_unilm

SIZE = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
CHARS = "甲乙丙丁戊己庚辛"




# --- an independent reference for the step scores ------------------------------------------
class ReferenceScorer:
    """Step scores computed naively from the key token lists (no trie, no rapidfuzz)."""

    def __init__(self, key_tokens, sep, rule=None, alpha=1.0, copy_alpha=0.0, copy_per_char=0.0, uncovered_cost=0.0):
        self.keys, self.sep, self.rule, self.alpha = [tuple(k) for k in key_tokens], sep, rule, alpha
        self.uncovered_cost = uncovered_cost
        self.copy_alpha, self.copy_per_char = copy_alpha, copy_per_char
        self.copied = 0  # steps where the subject-copy bonus changed the scores
        self.applied = 0  # steps where the look-ahead changed the scores (some Δ > 0)

    def step(self, log_probs: torch.Tensor, question, prefix) -> dict[int, float]:
        """Processed log-score of every allowed token after `prefix`."""
        prefix = tuple(prefix)
        through = [k for k in self.keys if k[: len(prefix)] == prefix and len(k) > len(prefix)]
        allowed = sorted({k[len(prefix)] for k in through})
        lp = torch.log_softmax(log_probs.double()[allowed], 0)  # trie mask, renormalised
        if self.copy_alpha and len(allowed) > 1 and self.sep not in prefix:
            def copies(tokens):  # a contiguous piece of the question
                return any(list(question[i : i + len(tokens)]) == list(tokens) for i in range(len(question) - len(tokens) + 1))
            copied = {k[: k.index(self.sep)] for k in self.keys if copies(k[: k.index(self.sep)])}  # subjects
            def bonus(a):  # α on the way to a copied subject, β per character its longest one adds
                if a == self.sep:
                    return self.copy_alpha if prefix in copied else 0.0
                through = [len(c) - len(prefix) for c in copied if c[: len(prefix) + 1] == prefix + (a,)]
                return self.copy_alpha + self.copy_per_char * max(through) if through else 0.0
            bonuses = [bonus(a) for a in allowed]
            self.copied += len(set(bonuses)) > 1
            lp = torch.log_softmax(lp + torch.tensor(bonuses, dtype=torch.float64), 0)
        if self.rule and len(allowed) > 1 and self.sep in prefix:
            content = lambda s: [t for t in s if t != self.sep]  # noqa: E731
            covered = lcs(question, content(prefix))

            def gain(k):  # over the prefix, less μ per character of the segment being decoded it leaves uncovered
                g = lcs(question, content(k)) - covered
                rest = (list(k[len(prefix) :]) + [self.sep]).index(self.sep)
                return g - self.uncovered_cost * max(rest - g, 0)
            delta = torch.tensor([max(gain(k) for k in through if k[len(prefix)] == a) for a in allowed], dtype=torch.float64)
            assert self.uncovered_cost or (delta >= 0).all()  # without μ, Δ ≥ 0 needs no floor
            delta = delta.clamp(min=0)
            self.applied += bool((delta > 0).any())
            lp = torch.log_softmax(lp / (delta + 1) if self.rule == "power" else lp + self.alpha * delta, 0)
        return dict(zip(allowed, lp.tolist()))


def teacher_forced_log_probs(model, question_ids, targets) -> list[torch.Tensor]:
    """Per target, one teacher-forced pass: row i holds the next-token log-probs after i target tokens
    (row 0 at the question's last token). Causal attention over the target makes these the decode-time scores."""
    out = []
    with torch.no_grad():
        for t in targets:
            ids = torch.tensor([list(question_ids) + list(t)])
            seg = torch.tensor([[0] * len(question_ids) + [1] * len(t)])
            logits = model(ids, seg, torch.ones_like(ids, dtype=torch.bool))[0]
            out.append(torch.log_softmax(logits[len(question_ids) - 1 :].double(), -1))
    return out


# --- (a) random KB, random models: only KB keys, scores as the reference says ----------------
@pytest.fixture(scope="module")
def random_kb():
    rng = random.Random(0)
    word = lambda lo, hi: "".join(rng.choice(CHARS) for _ in range(rng.randint(lo, hi)))  # noqa: E731
    # few subjects with several predicates each (and homonyms told apart by a meaning), so the
    # look-ahead rule, which needs S decoded and a choice left, applies at many steps
    entities = [(word(1, 3), rng.choice(["", "", word(1, 2)])) for _ in range(40)]
    triples = [Triple(Key(s, word(1, 3), m), word(1, 4)) for s, m in (rng.choice(entities) for _ in range(220))]
    kb = KnowledgeBase(triples)
    questions = [word(3, 8) for _ in range(4)]
    tok = CharTokenizer.build(list(CHARS) + questions)
    return kb, tok, questions


@pytest.fixture(scope="module", params=[(arch, seed) for arch in ("bert", "roformer") for seed in range(3)],
                ids=lambda p: f"{p[0]}-seed{p[1]}")
def random_model(request):
    arch, seed = request.param
    torch.manual_seed(seed)
    # a larger init than the default 0.02 makes the random model's distributions peaked and question
    # dependent, so the beams really differ (and near-ties, which would make comparisons fragile, are rare)
    model = UniLM(build_backbone(arch, len(CHARS) + 4, initializer_range=0.3, **SIZE)).eval()
    model.seed = seed
    return model


LOOKAHEADS = {"none": lambda: [], "power": lambda: [LcsPowerLookahead()], "bonus": lambda: [LcsBonusLookahead(alpha=0.7)],
              "copy_bonus": lambda: [SubjectCopy(alpha=1.5, per_char=0.4), LcsBonusLookahead(alpha=0.7, uncovered_cost=0.3)]}


@pytest.mark.parametrize("lookahead", list(LOOKAHEADS))
@pytest.mark.parametrize("beam", [1, 3])
def test_beam_search_yields_scored_kb_keys(random_kb, random_model, beam, lookahead):
    kb, tok, questions = random_kb
    order = ["spm", "smp"][random_model.seed % 2]  # both target orders, over the seeds
    ks = KeySpace(kb, tok, order)
    assert len(kb) > 150
    rules = LOOKAHEADS[lookahead]()
    encoded = [encode_question(tok, q, 64) for q in questions]

    together = beam_search(random_model, ks, encoded, rules, tok.pad_id, beam_size=beam, num_return=beam)
    assert len(together) == len(questions)

    key_tokens = [encode_key(tok, k, order) for k in kb.keys]  # recomputed, not the keyspace's
    reference = ReferenceScorer(key_tokens, tok.sep_id, rule={"none": None, "copy_bonus": "bonus"}.get(lookahead, lookahead),
                                alpha=0.7, copy_alpha=1.5 if lookahead == "copy_bonus" else 0.0, copy_per_char=0.4,
                                uncovered_cost=0.3 if lookahead == "copy_bonus" else 0.0)
    for q_ids, hyps in zip(encoded, together):
        ids = [h.key_id for h in hyps]
        assert len(hyps) == beam  # the KB has more than `beam` keys: num_return=beam keys come back
        assert len(set(ids)) == len(ids)
        assert all(0 <= i < len(kb) for i in ids)
        log_probs = [h.log_prob for h in hyps]
        assert all(lp <= 1e-6 for lp in log_probs)
        assert log_probs == sorted(log_probs, reverse=True)

        # each hypothesis is a whole KB key, scored as the sum of its processed step scores
        targets = [key_tokens[i] for i in ids]
        for h, target, steps in zip(hyps, targets, teacher_forced_log_probs(random_model, q_ids, targets)):
            assert kb.keys[h.key_id] == Key.from_parts(tuple(tok.decode(p) for p in _split(target, tok.sep_id)), order)
            total, prefix = 0.0, []
            for i, token in enumerate(target):
                scores = reference.step(steps[i], list(q_ids[1:-1]), prefix)
                assert token in scores
                if beam == 1:  # greedy: the chosen token is the best allowed one at every step
                    assert scores[token] >= max(scores.values()) - 1e-5
                total += scores[token]
                prefix.append(token)
            assert h.log_prob == pytest.approx(total, abs=2e-4)
    if lookahead != "none":
        assert reference.applied > 0  # the rule really re-weighted some step on the way
    assert (reference.copied > 0) == (lookahead == "copy_bonus")

    # a batch decodes like its questions one at a time (left padding changes nothing)
    for q_ids, hyps in zip(encoded, together):
        (alone,) = beam_search(random_model, ks, [q_ids], rules, tok.pad_id, beam_size=beam, num_return=beam)
        assert [h.key_id for h in alone] == [h.key_id for h in hyps]
        assert [h.log_prob for h in alone] == pytest.approx([h.log_prob for h in hyps], abs=1e-4)


class Recomputing:
    """The same UniLM decoded without a KV cache: every step re-runs forward on question + target so far.
    Its "cache" is the token history, which beam search reorders as it reorders the KV cache.
    (That the rows are reordered right is checked against teacher forcing above.)"""

    class History:
        def __init__(self, question_ids, question_valid):
            self.ids, self.question_valid, self.targets = question_ids, question_valid, 0

        def reorder(self, rows):
            self.ids, self.question_valid = self.ids[rows], self.question_valid[rows]

    def __init__(self, model: UniLM):
        self.model = model

    def parameters(self):
        return self.model.parameters()

    def start(self, question_ids, valid):
        return self.model(question_ids, torch.zeros_like(question_ids), valid)[:, -1], self.History(question_ids, valid)

    def extend(self, tokens, history, rows):
        history.ids, history.targets = torch.cat([history.ids, tokens[:, None]], 1), history.targets + 1
        segments = torch.zeros_like(history.ids)
        segments[:, -history.targets :] = 1
        valid = torch.cat([history.question_valid, torch.ones_like(segments[:, -history.targets :], dtype=torch.bool)], 1)
        return self.model(history.ids, segments, valid)[rows, -1]


def with_copy_head(model: UniLM) -> UniLM:
    """The same random UniLM with a random copy head: its step scores are the mixture's log-probabilities."""
    torch.manual_seed(model.seed)
    copying = UniLM(model.backbone, copy=True).eval()
    missing, _ = copying.load_state_dict(model.state_dict(), strict=False)
    assert missing and all(k.startswith("copy_head.") for k in missing)
    return copying


COPY = pytest.mark.parametrize("copy", [False, True], ids=["lm-head", "copy-head"])


@COPY
@pytest.mark.parametrize("lookahead", ["none", "power"])
@pytest.mark.parametrize("beam", [1, 3])
def test_cached_decoding_equals_full_recompute(random_kb, random_model, beam, lookahead, copy):
    """The KV cache changes nothing: same keys, same scores as recomputing every step (with a copy
    head too: its question memory follows the beams)."""
    kb, tok, questions = random_kb
    ks = KeySpace(kb, tok, "spm")
    encoded = [encode_question(tok, q, 64) for q in questions]
    decoded = {}
    base = with_copy_head(random_model) if copy else random_model
    for name, model in (("cached", base), ("recomputed", Recomputing(base))):
        rules = [LcsPowerLookahead()] if lookahead == "power" else []
        decoded[name] = beam_search(model, ks, encoded, rules, tok.pad_id, beam_size=beam, num_return=beam)
    for cached, recomputed in zip(decoded["cached"], decoded["recomputed"]):
        assert [h.key_id for h in cached] == [h.key_id for h in recomputed]
        assert [h.log_prob for h in cached] == pytest.approx([h.log_prob for h in recomputed], abs=1e-4)


@COPY
@pytest.mark.parametrize("lookahead", ["none", "power"])
def test_greedy_decoding_equals_the_naive_reference_decoder(random_kb, random_model, lookahead, copy):
    """At beam 1 the project's search and the article-style decoder the benchmark times
    (kgqa.reference.NaiveDecoder: dict trie, full recompute, Python LCS) pick the same keys and scores;
    both read a copy head's log-probabilities as they read logits (through a softmax)."""
    random_model = with_copy_head(random_model) if copy else random_model
    kb, tok, questions = random_kb
    ks = KeySpace(kb, tok, "spm")
    encoded = [encode_question(tok, q, 64) for q in questions]
    rules = [LcsPowerLookahead()] if lookahead == "power" else []
    project = beam_search(random_model, ks, encoded, rules, tok.pad_id, beam_size=1)
    naive = NaiveDecoder(random_model, [encode_key(tok, k, "spm") for k in kb.keys], tok.sep_id, lookahead == "power")
    for q_ids, (hyp,) in zip(encoded, project):
        key_id, score = naive.answer(q_ids, 1)
        assert (hyp.key_id, hyp.log_prob) == (key_id, pytest.approx(score, abs=1e-4))


def _split(tokens, sep):
    parts, cur = [], []
    for t in tokens:
        if t == sep:
            parts.append(cur)
            cur = []
        else:
            cur.append(t)
    assert not cur and len(parts) == 3
    return parts


def test_finished_questions_give_their_place_to_the_last_ones():
    """Questions 1 and 4 of six are done: question 5 takes place 1, the others stay put."""
    keep = np.array([True, False, True, True, False, True])
    assert fill_from_the_end(keep).tolist() == [0, 5, 2, 3]
    assert fill_from_the_end(np.array([False, True, True])).tolist() == [2, 1]
    assert fill_from_the_end(np.array([True, True, False])).tolist() == [0, 1]
    assert fill_from_the_end(np.array([False, False])).tolist() == []


def test_num_return_cannot_exceed_beam(random_kb):
    kb, tok, questions = random_kb
    model = UniLM(build_backbone("bert", tok.vocab_size, **SIZE)).eval()
    with pytest.raises(ValueError, match="num_return"):
        beam_search(model, KeySpace(kb, tok, "spm"), [encode_question(tok, questions[0], 64)], [],
                    tok.pad_id, beam_size=2, num_return=3)


def test_small_kb_returns_every_key():
    """Fewer keys than num_return: every key comes back once, probabilities summing to 1 (exhaustive)."""
    keys = [Key("甲", "乙"), Key("甲", "丙", "丁"), Key("乙", "乙")]
    kb = KnowledgeBase(Triple(k, "x") for k in keys)
    tok = CharTokenizer.build(CHARS)
    torch.manual_seed(0)
    model = UniLM(build_backbone("roformer", tok.vocab_size, initializer_range=0.3, **SIZE)).eval()
    (hyps,) = beam_search(model, KeySpace(kb, tok, "spm"), [encode_question(tok, "甲乙丙", 64)], [],
                          tok.pad_id, beam_size=5, num_return=5)
    assert sorted(h.key_id for h in hyps) == [0, 1, 2]
    assert sum(math.exp(h.log_prob) for h in hyps) == pytest.approx(1.0, abs=1e-5)


def test_a_beam_with_one_key_left_finishes_without_running_the_model_on_the_rest():
    """乙 leaves one key (乙 [SEP] 乙 [SEP] [SEP]) at the first step, 甲 two, which part after 甲 [SEP]:
    the model runs on 甲 (forced: [SEP]) and on 甲 [SEP] (乙 or 丙), never on a key's forced rest,
    and the scores are those of the whole keys (as the exhaustive sum above shows)."""
    keys = [Key("甲", "乙"), Key("甲", "丙", "丁"), Key("乙", "乙")]
    kb = KnowledgeBase(Triple(k, "x") for k in keys)
    tok = CharTokenizer.build(CHARS)
    torch.manual_seed(0)
    model = UniLM(build_backbone("roformer", tok.vocab_size, initializer_range=0.3, **SIZE)).eval()
    extended, extend = [], model.extend
    model.extend = lambda tokens, cache, rows=None: extended.append(tokens.tolist()) or extend(tokens, cache, rows)
    (hyps,) = beam_search(model, KeySpace(kb, tok, "spm"), [encode_question(tok, "甲乙丙", 64)], [],
                          tok.pad_id, beam_size=3, num_return=3)
    assert sorted(h.key_id for h in hyps) == [0, 1, 2]
    assert [tokens[0] for tokens in extended] == [tok.encode("甲")[0], tok.sep_id]


def test_model_scores_rank_keys_by_the_models_probability_of_writing_them(random_kb, random_model):
    """renormalise=False: a key's score is the sum of the model's full-vocabulary log-probs of all its
    tokens, forced ones included; a beam as wide as the KB keeps every key, so the best returned is
    the KB's most probable key under the model, checked key by key with teacher forcing."""
    kb, tok, questions = random_kb
    ks = KeySpace(kb, tok, "spm")
    key_tokens = [encode_key(tok, k, "spm") for k in kb.keys]
    for q in questions[:2]:
        q_ids = encode_question(tok, q, 64)
        steps = teacher_forced_log_probs(random_model, q_ids, key_tokens)
        totals = [float(sum(s[i, t] for i, t in enumerate(target))) for s, target in zip(steps, key_tokens)]
        rows = [(q_ids, target) for target in key_tokens]  # the training loss's score of the same keys, batched
        batch = teacher_forcing(rows, tok.pad_id)
        with torch.no_grad():
            assert random_model.key_log_probs(**batch).tolist() == pytest.approx(totals, abs=2e-4)
        (hyps,) = beam_search(random_model, ks, [q_ids], [], tok.pad_id, beam_size=len(kb), num_return=3,
                              renormalise=False)
        assert [h.key_id for h in hyps] == sorted(range(len(kb)), key=lambda i: -totals[i])[:3]
        assert [h.log_prob for h in hyps] == pytest.approx(sorted(totals, reverse=True)[:3], abs=2e-4)
        (narrow,) = beam_search(random_model, ks, [q_ids], [], tok.pad_id, beam_size=3, num_return=3, renormalise=False)
        assert [h.log_prob for h in narrow] == pytest.approx([totals[h.key_id] for h in narrow], abs=2e-4)
        assert sum(math.exp(t) for t in totals) < 0.99  # the model's mass outside the KB: not renormalised


# --- (b) the article's case: look-ahead turns 主要成就 into 主讲课程 --------------------------
QUESTION = "张三主要讲什么课程"
KEYS = [Key("张三", "主讲课程"), Key("张三", "主要成就")]


def article_setup(order="spm", extra_keys=()):
    kb = KnowledgeBase([Triple(KEYS[0], "数学"), Triple(KEYS[1], "一等奖")] + [Triple(k, "x") for k in extra_keys])
    strings = [QUESTION] + [s for k in kb.keys for s in (k.subject, k.predicate, k.meaning)]
    tok = CharTokenizer.build(strings)
    return kb, tok, KeySpace(kb, tok, order)


def preferring_model(tok, arch="bert") -> UniLM:
    """Prefers 要 (p 0.6) over 讲 (p 0.4) at every step."""
    return unigram_unilm(tok.vocab_size, {tok.encode("要")[0]: math.log(0.6), tok.encode("讲")[0]: math.log(0.4)}, arch)


# Hand computation. Key tokens (spm): 张 三 [SEP] 主 {讲 课 程 | 要 成 就} [SEP] [SEP].
# Every step has one allowed token (probability 1 after the trie mask) except after "张三[SEP]主",
# where 讲 and 要 are allowed: renormalised over them the model gives 讲 0.4, 要 0.6.
# Without look-ahead the beam answers 主要成就 with probability 0.6.
# Look-ahead: question content q = 张三主要讲什么课程; the prefix content 张三主 covers LCS = 3.
#   via 讲: key content 张三主讲课程, LCS(q, ·) = 6 (张三主讲课程)  → Δ = 3
#   via 要: key content 张三主要成就, LCS(q, ·) = 4 (张三主要)      → Δ = 1
# Power rule p^(1/(Δ+1)): 讲 0.4^(1/4) ≈ 0.7953 > 要 0.6^(1/2) ≈ 0.7746, so 主讲课程 wins with
# probability 0.7953 / (0.7953 + 0.7746) ≈ 0.5066.
P_JIANG = 0.4 ** 0.25 / (0.4 ** 0.25 + 0.6 ** 0.5)


@pytest.mark.parametrize("order", ["spm", "smp"])
@pytest.mark.parametrize("arch", ["bert", "roformer"])
def test_article_case_through_the_answerer(arch, order):
    kb, tok, ks = article_setup(order)
    model = preferring_model(tok, arch)

    (plain,) = Answerer(ks, tok)(model, [QUESTION])
    assert plain[0].triple.key == Key("张三", "主要成就")
    assert plain[0].triple.obj == "一等奖" and plain[0].objects == ("一等奖",)
    assert plain[0].confidence == pytest.approx(0.6, abs=1e-5)

    (ahead,) = Answerer(ks, tok, rules=[LcsPowerLookahead()])(model, [QUESTION])
    assert ahead[0].triple == Triple(Key("张三", "主讲课程"), "数学")
    assert ahead[0].triple.answer() == "张三 ||| 主讲课程 ||| 数学"
    assert ahead[0].confidence == pytest.approx(P_JIANG, abs=1e-5)
    assert P_JIANG > 0.5

    # the additive rule, α = 1: log 0.4 + 3 vs log 0.6 + 1 → 讲 with 0.4e³ / (0.4e³ + 0.6e)
    (bonus,) = Answerer(ks, tok, rules=[LcsBonusLookahead(alpha=1.0)])(model, [QUESTION])
    assert bonus[0].triple.key == Key("张三", "主讲课程")
    p = 0.4 * math.e ** 3 / (0.4 * math.e ** 3 + 0.6 * math.e)
    assert bonus[0].confidence == pytest.approx(p, abs=1e-5)

    # both keys with num_return=2, in score order, probabilities summing to 1
    (both,) = Answerer(ks, tok, rules=[LcsPowerLookahead()], num_return=2)(model, [QUESTION])
    assert [a.triple.key.predicate for a in both] == ["主讲课程", "主要成就"]
    assert sum(a.confidence for a in both) == pytest.approx(1.0, abs=1e-5)


HOMONYM_FACTS = [(Key("刘德华", "出生日期", "演员"), "1961"), (Key("刘德华", "代表作品", "演员"), "无间道"),
                 (Key("刘德华", "出生日期", "科学家"), "1950"), (Key("刘德华", "研究领域", "科学家"), "凝聚态物理")]


@pytest.mark.parametrize("order", ["spm", "smp"])
def test_a_homonyms_meaning_follows_its_facts_in_the_kb(order):
    """The model prefers 科 (0.6) over 演 (0.4) and 出 to any other predicate: without the rule both questions get
    刘德华（科学家）. With MeaningEvidence(α=1) the first question's 无间道 is 3 characters of the actor's facts
    (出生日期 both have, left out; the scientist's facts share nothing ≥ 2 with it) → 演 with 0.4e³ / (0.4e³ + 0.6);
    the second's 凝聚态物理 (5) is the scientist's. Before M is decoded the rule leaves the scores alone."""
    kb = KnowledgeBase([Triple(k, o) for k, o in HOMONYM_FACTS])
    questions = ["主演无间道的刘德华出生日期是什么", "研究凝聚态物理的刘德华出生日期是什么"]
    tok = CharTokenizer.build(questions + [s for k, o in HOMONYM_FACTS for s in (k.subject, k.predicate, k.meaning, o)])
    ks = KeySpace(kb, tok, order)
    model = unigram_unilm(tok.vocab_size, {tok.encode("科")[0]: math.log(0.6), tok.encode("演")[0]: math.log(0.4),
                                           tok.encode("出")[0]: 5.0})
    plain = Answerer(ks, tok)(model, questions)
    assert [b[0].triple.key.meaning for b in plain] == ["科学家", "科学家"]
    ruled = Answerer(ks, tok, rules=[MeaningEvidence(alpha=1.0)])(model, questions)
    assert [b[0].triple.key for b in ruled] == [Key("刘德华", "出生日期", "演员"), Key("刘德华", "出生日期", "科学家")]
    at_m = "刘德华|出生日期|" if order == "spm" else "刘德华|"
    ctx = context(ks, tok, questions, [(0, at_m), (1, at_m)])
    ke, yan = tok.encode("科")[0], tok.encode("演")[0]
    scores = torch.full((2, tok.vocab_size), -5.0)
    scores[:, ke], scores[:, yan] = math.log(0.6), math.log(0.4)
    out = MeaningEvidence(alpha=1.0)(trie_mask(scores, ctx), ctx).exp()
    assert out[0, yan].item() == pytest.approx(0.4 * math.e ** 3 / (0.4 * math.e ** 3 + 0.6), abs=1e-6)
    assert out[1, ke].item() == pytest.approx(0.6 * math.e ** 5 / (0.6 * math.e ** 5 + 0.4), abs=1e-6)
    before_m = context(ks, tok, questions, [(0, "刘德华|" if order == "spm" else "刘")])
    assert len(MeaningEvidence().evidence_pairs(before_m)[0]) == 0


def context(ks, tok, questions, rows):
    """A StepContext by hand: rows = (question index, prefix string with | for [SEP])."""
    prefixes = [[tok.sep_id if c == "|" else tok.encode(c)[0] for c in p] for _, p in rows]
    assert len({len(p) for p in prefixes}) == 1
    states = np.array([ks.trie.walk(p) for p in prefixes])
    assert (states >= 0).all()
    return step_context(ks, [tok.encode(q) for q in questions], np.array([q for q, _ in rows]),
                        np.array(prefixes, dtype=np.int64), states)


def test_lcs_gains_at_the_branch():
    kb, tok, ks = article_setup()
    other = "张三的主要成就是什么"  # here 要 is the covering token: LCS(·, 张三主要成就) = 6, Δ = 3; 讲: 张三主 → Δ 0
    ctx = context(ks, tok, [QUESTION, other], [(0, "张三|主"), (1, "张三|主")])
    gains = LcsLookahead().gains(ctx, tok.vocab_size)
    assert gains.shape == (2, tok.vocab_size)
    jiang, yao = tok.encode("讲")[0], tok.encode("要")[0]
    expected = torch.zeros(2, tok.vocab_size)
    expected[0, jiang], expected[0, yao] = 3, 1
    expected[1, jiang], expected[1, yao] = 0, 3
    torch.testing.assert_close(gains, expected)

    # the power rule from those gains, on the trie-masked model scores
    scores = torch.full((2, tok.vocab_size), -5.0)
    scores[:, jiang], scores[:, yao] = math.log(0.4), math.log(0.6)
    out = LcsPowerLookahead()(trie_mask(scores, ctx), ctx).exp()
    assert out[0, jiang].item() == pytest.approx(P_JIANG, abs=1e-6)
    q = 0.6 ** 0.25 / (0.6 ** 0.25 + 0.4)  # row 1: 要 0.6^(1/4) vs 讲 0.4^(1/1)
    assert out[1, yao].item() == pytest.approx(q, abs=1e-6)
    assert out.sum(-1).tolist() == pytest.approx([1.0, 1.0], abs=1e-6)


def test_uncovered_cost_prefers_the_predicate_with_fewer_other_characters():
    # 双塔有多高: after 双塔|, 塔高 and 最高学历 each gain 1 (高) over the prefix's LCS; μ = 0: a tie.
    # μ = 0.3: 塔高 leaves 1 character of P uncovered → 1 − 0.3 = 0.7; 最高学历 leaves 3 → 1 − 0.9 = 0.1.
    keys = [Key("双塔", "塔高"), Key("双塔", "最高学历")]
    kb = KnowledgeBase(Triple(k, "x") for k in keys)
    tok = CharTokenizer.build(["双塔有多高"] + [k.predicate for k in keys])
    ks = KeySpace(kb, tok, "spm")
    ta, zui = tok.encode("塔")[0], tok.encode("最")[0]
    ctx = context(ks, tok, ["双塔有多高"], [(0, "双塔|")])
    for cost, expected in [(0.0, [1.0, 1.0]), (0.3, [0.7, 0.1])]:
        gains = LcsLookahead(uncovered_cost=cost).gains(ctx, tok.vocab_size)
        assert gains[0, [ta, zui]].tolist() == pytest.approx(expected)
    # additive rule, α = 5, indifferent model: odds e^(5·0.7) : e^(5·0.1)
    out = LcsBonusLookahead(alpha=5.0, uncovered_cost=0.3)(trie_mask(torch.zeros(1, tok.vocab_size), ctx), ctx).exp()
    assert out[0, ta].item() == pytest.approx(1 / (1 + math.exp(-3.0)), abs=1e-6)
    # a μ larger than the gain is worth floors at 0, as a token with no gain: 最高学历 at μ = 0.5 → max(1 − 1.5, 0)
    assert LcsLookahead(uncovered_cost=0.5).gains(ctx, tok.vocab_size)[0, zui].item() == 0


def test_lcs_gains_do_not_apply_before_the_subject_is_complete():
    kb, tok, ks = article_setup(extra_keys=[Key("张四", "主讲课程"), Key("李三", "主讲课程")])
    look = LcsLookahead()
    zeros = torch.zeros(1, tok.vocab_size)
    # at the root (李 / 张) and inside S (三 / 四): several tokens allowed, but no [SEP] decoded yet.
    # Both would have a positive Δ if the rule applied (张 and 三 are in the question, 李 and 四 are not).
    for prefix in ["", "张"]:
        ctx = context(ks, tok, [QUESTION], [(0, prefix)])
        assert (np.bincount(ctx.allowed[0]) > 1).all()
        torch.testing.assert_close(look.gains(ctx, tok.vocab_size), zeros)
    # after S, a single allowed token: nothing to re-weight either
    ctx = context(ks, tok, [QUESTION], [(0, "张三|")])
    assert len(ctx.allowed[1]) == 1
    torch.testing.assert_close(look.gains(ctx, tok.vocab_size), zeros)
    # and once S is complete at a branch the rule does apply, on the same keyspace
    ctx = context(ks, tok, [QUESTION], [(0, "张三|主")])
    assert look.gains(ctx, tok.vocab_size).sum() > 0


def test_subject_copy_favours_subjects_copied_from_the_question():
    extra = [Key("张四", "主讲课程"), Key("李三", "主讲课程"), Key("三主", "别名"), Key("主要人物", "别名"),
             Key("主什", "别名")]
    kb, tok, ks = article_setup(extra_keys=extra)
    copy = SubjectCopy(alpha=math.log(3))  # triples the odds of a copying token
    zhang, li, san, si, zhu = (tok.encode(c)[0] for c in "张李三四主")
    # the question 张三主要讲什么课程 holds the subjects 张三 and 三主, not 张四, 李三, 主什 or 主要人物 (only its start 主要)
    # root: 张 and 三 begin a copied subject; 李 does not, nor 主 (a piece of the question, but no subject)
    ctx = context(ks, tok, [QUESTION, QUESTION], [(0, ""), (1, "")])
    rows, tokens, _ = copy.copy_pairs(ctx)
    assert sorted(tokens[rows == 0].tolist()) == sorted([zhang, san])
    uniform = trie_mask(torch.zeros(2, tok.vocab_size), ctx)  # 张, 李, 三, 主 equally likely
    out = copy(uniform, ctx).exp()
    assert out[0, [zhang, li, san, zhu]].tolist() == pytest.approx([3 / 8, 1 / 8, 3 / 8, 1 / 8], abs=1e-6)
    # after 主 (要 or 什 may follow): 要 keeps a piece of the question but leads only to 主要人物: no bonus
    ctx = context(ks, tok, [QUESTION], [(0, "主")])
    assert ctx.branching.tolist() == [0] and len(copy.copy_pairs(ctx)[0]) == 0
    ctx = context(ks, tok, [QUESTION], [(0, "张")])
    out = copy(trie_mask(torch.zeros(1, tok.vocab_size), ctx), ctx).exp()
    assert out[0, [san, si]].tolist() == pytest.approx([3 / 4, 1 / 4], abs=1e-6)
    # once S is past its [SEP] the rule is silent (the LCS rules take over)
    ctx = context(ks, tok, [QUESTION], [(0, "张三|主")])
    assert len(copy.copy_pairs(ctx)[0]) == 0


def test_subject_copy_prefers_the_subject_covering_more_of_the_question():
    kb, tok, ks = article_setup(extra_keys=[Key("张三主", "别名"), Key("三主", "别名"), Key("李三", "别名")])
    copy = SubjectCopy(alpha=math.log(3), per_char=math.log(2))  # odds ×3 on the way to a copy, ×2 per character
    zhang, li, san, zhu = (tok.encode(c)[0] for c in "张李三主")
    # root: 张 leads to 张三主 (3 characters to copy): 3·2³ = 24; 三 to 三主 (2): 3·2² = 12; 李: 1
    ctx = context(ks, tok, [QUESTION], [(0, "")])
    out = copy(trie_mask(torch.zeros(1, tok.vocab_size), ctx), ctx).exp()
    assert out[0, [zhang, san, li]].tolist() == pytest.approx([24 / 37, 12 / 37, 1 / 37], abs=1e-6)
    # after 张三: [SEP] ends the copy 张三 (3), 主 goes on to 张三主 (3·2 = 6)
    ctx = context(ks, tok, [QUESTION], [(0, "张三")])
    out = copy(trie_mask(torch.zeros(1, tok.vocab_size), ctx), ctx).exp()
    assert out[0, [tok.sep_id, zhu]].tolist() == pytest.approx([1 / 3, 2 / 3], abs=1e-6)
