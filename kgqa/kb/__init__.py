"""The knowledge base, and everything that owns a part of it.

A question is answered along one path: question → decoded key (a path of the key trie) → key id →
KB → answer (the key's objects). This package owns the last three arrows and the files behind them:

    columns.py       KnowledgeBase: keys (S, P, M) as sorted string tables and index columns, their
                     objects, ids, updates (`updated`), and its saved form (the kb/ folder of arrays)
    strings.py       Strings: many strings as one Arrow array, read like a list of str
    knowledge_txt.py Knowledge.txt read line by line (with the file and line of a bad one) and written
    arrow_reader.py  Knowledge.txt read by Arrow (same KB), falling back to the line reader
    changes.py       Change, the add/delete files and a folder's change log (changes.tsv)
    folder.py        KbFolder: a saved KB folder (Knowledge.txt, columns, vocabulary, tries), its lock,
                     loading with the changes replayed under a trie overlay, record and merge
    keyspace.py      KeySpace: the KB's keys as token sequences in a trie whose values are key ids
    sources.py       KbSource, the one interface of every `kb=` option (build, tokenizer, keyspace), and
                     the gold, synth and file sources (the folder source is KbFolder)

Text files are read by kgqa/data/kgclue.py's LineReader, shared with the QA files, and every TSV
line goes through its split_tsv / join_tsv.
"""
