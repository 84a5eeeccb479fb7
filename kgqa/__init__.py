"""kgqa: generative KBQA with a seq2seq model constrained by a prefix trie over the KB.

One question travels one path, one module per arrow:

    question    kgqa/data/kgclue.py          read from a KgCLUE file (or kgqa-predict question="...")
    → tokens    kgqa/data/tokenizer.py       one token per character ("[CLS] q [SEP]")
    → UniLM     kgqa/model.py                one encoder: bidirectional over q, causal over the key
    → step scores  kgqa/decoding/context.py  log-probabilities of the next key token, per beam row
    → trie mask    kgqa/decoding/mask.py     only tokens that continue a KB key (kgqa/trie.py)
    → look-ahead   kgqa/decoding/processors.py  the re-weighting rules of conf/lookahead/
    → beam      kgqa/decoding/beam.py        batched, KV-cached beam search
    → key id    kgqa/kb/keyspace.py          a trie leaf is the id of one (S, P, M) key
    (→ memory   kgqa/decoding/memory.py      a corrected question's key instead: kgqa/kb/corrections.py)
    → KB        kgqa/kb/columns.py           the key's objects
    → answer    kgqa/decoding/answerer.py    Answerer: questions in, (key, object, confidence) out

Around it: kgqa/kb/ (the KB's files, sources and changes), kgqa/datamodule.py and kgqa/module.py
(Lightning: batches, teacher forcing, evaluation), kgqa/build.py (the objects from the Hydra
config), kgqa/cli/ (entry points), kgqa/report/ (comparing runs).
"""
