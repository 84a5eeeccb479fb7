"""kgqa: generative KBQA with a seq2seq model constrained by a prefix trie over the KB."""
