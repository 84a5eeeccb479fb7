"""The KB's keys as the decoder sees them: token sequences in a prefix trie."""
from __future__ import annotations

from kgqa.data.kb import KnowledgeBase
from kgqa.data.tokenizer import Tokenizer, encode_key
from kgqa.trie import Trie


class KeySpace:
    """Trie value = KB key id, so a decoded leaf maps straight to (S, P, M) and its objects."""

    def __init__(self, kb: KnowledgeBase, tokenizer: Tokenizer, order: str):
        self.kb, self.order, self.sep_id = kb, order, tokenizer.sep_id
        self.key_tokens = [encode_key(tokenizer, k, order) for k in kb.keys]
        self.trie = Trie.build(self.key_tokens)
