"""Decoding: question → tokens → UniLM → step scores → trie mask → look-ahead → beam → key id → KB → answer.

context.py     StepContext and the look-ahead Rule protocol (what every step shares)
mask.py        the trie mask: the allowed tokens of a step and the scores renormalised over them
processors.py  the look-ahead rules (LCS power / bonus, SubjectCopy), named by conf/lookahead/
beam.py        the batched, KV-cached beam search: mask, then rules, then beams
answerer.py    Answerer (text in, KB answers out) and the one factory from the decode/lookahead configs
Imports go one way: context ← mask, processors ← beam ← answerer.
"""
