"""The embedded default `data=toy`: a small generated Chinese KBQA set.

It lets the main command run anywhere on CPU in about a minute, with no download,
while keeping KgCLUE's difficulties in miniature:
- held-out subjects: val/test entities never appear in train questions (split by
  name, so homonyms stay together), the model must copy the subject;
- confusable predicates on one entity (出生地/出生日期, 主讲课程/主要成就, ...);
- meanings and homonyms: some entities carry a meaning (歌手, 城市, ...); a name
  shared by two entities always gets the meaning's hint in its questions
  ("歌手{s}"), so every answer is determined by the question;
- prefix subjects: KB-only entities whose name extends or cuts a question subject.

Names are drawn from characters that occur in no template or hint, and no two
predicates share a template, so the subject span and the predicate are never
ambiguous. Deterministic for a seed; only lists and dicts are iterated.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable

from kgqa.data.kgclue import QAExample
from kgqa.data.triples import Key, Triple

NAME_CHARS = "张王李赵刘陈杨黄周吴徐孙胡朱郭罗梁宋谢韩唐冯董萧曹袁邓许傅沈曾彭吕苏卢蒋蔡贾丁魏薛明华丽强伟芳娜静磊洋勇艳杰涛秀霞刚桂英兰"

PERSON, PLACE = "person", "place"

# predicate -> (entity kind, question templates); templates never repeat across predicates.
TEMPLATES: dict[str, tuple[str, tuple[str, ...]]] = {
    "出生地": (PERSON, ("{s}的出生地是哪里？", "你知道{s}在哪里出生吗？", "{s}出生在什么地方？")),
    "出生日期": (PERSON, ("{s}的出生日期是什么时候？", "{s}是哪天出生的？", "你知道{s}的生日吗？")),
    "主讲课程": (PERSON, ("{s}主讲什么课程？", "{s}教的是哪门课？")),
    "主要成就": (PERSON, ("{s}的主要成就有哪些？", "{s}取得过什么成就？", "你知道{s}有什么成就吗？")),
    "毕业院校": (PERSON, ("{s}毕业于哪所学校？", "{s}是从哪个学校毕业的？")),
    "代表作品": (PERSON, ("{s}的代表作品是什么？", "{s}有哪些代表作？")),
    "身高": (PERSON, ("{s}的身高是多少？", "{s}有多高？")),
    "国籍": (PERSON, ("{s}是哪国人？", "{s}的国籍是什么？")),
    "所属公司": (PERSON, ("{s}属于哪家公司？", "{s}签约的是哪家公司？")),
    "所属地区": (PLACE, ("{s}属于哪个地区？", "{s}位于哪个地区？")),
    "人口数量": (PLACE, ("{s}有多少人口？", "{s}的人口数量是多少？")),
    "面积": (PLACE, ("{s}的面积有多大？", "{s}占地多少平方公里？")),
    "邮政编码": (PLACE, ("{s}的邮政编码是多少？", "{s}的邮编是什么？")),
    "气候类型": (PLACE, ("{s}属于什么气候？", "{s}的气候类型是什么？")),
}

# meaning -> (entity kind, how a question names the entity when the hint is given)
MEANINGS: dict[str, tuple[str, str]] = {
    "歌手": (PERSON, "歌手{s}"),
    "演员": (PERSON, "演员{s}"),
    "作家": (PERSON, "作家{s}"),
    "教授": (PERSON, "{s}教授"),
    "城市": (PLACE, "{s}这座城市"),
    "古镇": (PLACE, "{s}这个古镇"),
}

_COURSES = ("高等数学", "线性代数", "古代文学", "有机化学", "数据结构", "宏观经济学", "中国近代史", "普通物理")
_COUNTRIES = ("中国", "新加坡", "马来西亚", "加拿大", "美国", "英国", "日本", "澳大利亚")
_CLIMATES = ("亚热带季风气候", "温带季风气候", "热带雨林气候", "温带大陆性气候", "高原山地气候")


def _name(rng: random.Random, length: int) -> str:
    return "".join(rng.choice(NAME_CHARS) for _ in range(length))


# predicate -> a plausible random object; the model generates the key, so objects only need variety.
_OBJECTS: dict[str, Callable[[random.Random], str]] = {
    "出生地": lambda rng: _name(rng, 2) + "市",
    "出生日期": lambda rng: f"{rng.randint(1940, 2005)}年{rng.randint(1, 12)}月{rng.randint(1, 28)}日",
    "主讲课程": lambda rng: rng.choice(_COURSES),
    "主要成就": lambda rng: f"{rng.randint(1990, 2022)}年获{_name(rng, 2)}奖",
    "毕业院校": lambda rng: _name(rng, 2) + "大学",
    "代表作品": lambda rng: f"《{_name(rng, rng.randint(2, 4))}》",
    "身高": lambda rng: f"{rng.randint(150, 195)}cm",
    "国籍": lambda rng: rng.choice(_COUNTRIES),
    "所属公司": lambda rng: _name(rng, 2) + "传媒",
    "所属地区": lambda rng: _name(rng, 2) + "省",
    "人口数量": lambda rng: f"{rng.randint(2, 900)}万",
    "面积": lambda rng: f"{rng.randint(50, 20000)}平方公里",
    "邮政编码": lambda rng: f"{rng.randint(100000, 899999)}",
    "气候类型": lambda rng: rng.choice(_CLIMATES),
}


@dataclass
class ToyData:
    triples: list[Triple]  # the KB: question entities, homonyms and prefix distractors
    splits: dict[str, list[QAExample]]  # "train", "val", "test"


@dataclass
class _Entity:
    name: str
    meaning: str
    predicates: list[str]
    hinted: bool  # questions name it with its meaning's hint


def make_toy(
    seed: int = 0,
    n_entities: int = 1500,
    homonym_rate: float = 0.05,
    prefix_rate: float = 0.2,
    hint_rate: float = 0.3,
) -> ToyData:
    """Generate the toy KB and its train/val/test questions.

    n_entities: question entities (split 80/10/10 by name); homonym_rate: share of
    names carried by two entities with different meanings (always hinted);
    prefix_rate: share of names with a KB-only entity whose name extends or cuts
    it; hint_rate: share of other entities with a meaning whose questions give
    the hint anyway. Defaults give about 1,800/150/150 questions.
    """
    rng = random.Random(seed)
    used_names: dict[str, None] = {}

    def new_name(length: int, prefix: str = "") -> str:
        while True:
            name = prefix + _name(rng, length)
            if name not in used_names:
                used_names[name] = None
                return name

    def entity(name: str, meaning: str, hinted: bool) -> _Entity:
        kind = MEANINGS[meaning][0] if meaning else rng.choice((PERSON, PERSON, PLACE))
        preds = [p for p, (k, _) in TEMPLATES.items() if k == kind]
        return _Entity(name, meaning, rng.sample(preds, rng.randint(3, min(5, len(preds)))), hinted)

    groups: list[list[_Entity]] = []  # entities sharing a name
    count = 0
    while count < n_entities:
        name = new_name(rng.randint(2, 4))
        if rng.random() < homonym_rate:
            group = [entity(name, m, True) for m in rng.sample(list(MEANINGS), 2)]
        else:
            meaning = rng.choice(list(MEANINGS)) if rng.random() < 0.4 else ""
            group = [entity(name, meaning, bool(meaning) and rng.random() < hint_rate)]
        groups.append(group)
        count += len(group)

    triples = [Triple(Key(e.name, p, e.meaning), _OBJECTS[p](rng)) for g in groups for e in g for p in e.predicates]
    for group in groups:
        if rng.random() < prefix_rate:
            name = group[0].name
            cut = name[:-1]
            if len(cut) >= 2 and cut not in used_names and rng.random() < 0.5:
                used_names[cut] = None
                prefixed = cut
            else:
                prefixed = new_name(1, prefix=name)
            triples += [Triple(Key(prefixed, p, ""), _OBJECTS[p](rng)) for p in entity(prefixed, "", False).predicates]

    n_val = n_test = round(len(groups) * 0.1)
    order = rng.sample(range(len(groups)), len(groups))
    split_groups = {
        "val": [groups[i] for i in order[:n_val]],
        "test": [groups[i] for i in order[n_val : n_val + n_test]],
        "train": [groups[i] for i in order[n_val + n_test :]],
    }
    objects = {t.key: t.obj for t in triples}
    splits: dict[str, list[QAExample]] = {}
    for split, members in split_groups.items():
        examples: list[QAExample] = []
        for e in (e for g in members for e in g):
            asked = rng.sample(e.predicates, rng.randint(1, 2) if split == "train" else 1)
            for p in asked:
                mention = MEANINGS[e.meaning][1].format(s=e.name) if e.hinted else e.name
                question = rng.choice(TEMPLATES[p][1]).format(s=mention)
                key = Key(e.name, p, e.meaning)
                examples.append(QAExample(len(examples), question, Triple(key, objects[key])))
        splits[split] = examples
    return ToyData(triples, splits)
