"""Questions and their gold keys: question → tokens, and the training pairs.

    triples.py    Key (S, P, M), the S（M） split and the target orders (spm, smp)
    kgclue.py     LineReader (every user text file: file:line errors, skip counts, TSV fields) and the QA reader
    sources.py    the question sources behind `data=` (KgCLUE files, the toy set)
    tokenizer.py  question → tokens: the char vocabulary, or a pretrained one read one char per token
    toy.py, synth.py  the embedded toy set and the synthetic KB's distractors (experiments/SYNTH_RECIPE.md)
    augment.py    extra training pairs made from KB keys (subject swap, template fill)
"""

DATAMODULE_KEYS = ("batch_size", "eval_batch_size", "max_question_len", "batches_per_bucket", "num_workers")
"""The data module's own settings (data.module in conf/data), which runs and commands older than that node kept
flat in data."""
