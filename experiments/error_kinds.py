"""What a run got wrong, by part of the key: counts of questions by (subject right / only its meaning wrong /
wrong) × (predicate right or wrong) × (gold predicate written verbatim in the question or not).

    python experiments/error_kinds.py <run>/questions_test.jsonl ../shared/kgclue/test_public.json
"""
import argparse
import json
from collections import Counter

from kgqa.data.kgclue import read_qa
from kgqa.data.triples import join_subject, split_subject


def kinds(questions_file: str, qa_file: str) -> Counter:
    gold = {e.id: e for e in read_qa(qa_file)}
    counts = Counter()
    for line in open(questions_file, encoding="utf-8"):
        row = json.loads(line)
        example, key = gold[row["id"]], gold[row["id"]].triple.key
        subject, predicate = row["predicted"].split(" ||| ")[:2]
        s = ("S right" if subject == join_subject(key.subject, key.meaning)
             else "M wrong" if split_subject(subject)[0] == key.subject else "S wrong")
        p = "P right" if predicate == key.predicate else "P wrong"
        counts[(s, p, "P verbatim" if key.predicate in example.question else "P not verbatim")] += 1
    return counts


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("questions")
    parser.add_argument("qa")
    args = parser.parse_args()
    for kind, n in kinds(args.questions, args.qa).most_common():
        print(n, *kind, sep="\t")
