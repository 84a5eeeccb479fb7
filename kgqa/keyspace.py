"""The KB's keys as the decoder sees them: token sequences in a prefix trie."""
from __future__ import annotations

import logging

from kgqa.data.kb import KnowledgeBase
from kgqa.data.tokenizer import Tokenizer, encode_key
from kgqa.trie import KeyTrie, Trie

log = logging.getLogger(__name__)


class KeyTokens:
    """key_tokens[i]: the token ids of key i, read from the trie, which stores every key once."""

    def __init__(self, trie: KeyTrie):
        self.trie = trie

    def __getitem__(self, key_id: int) -> list[int]:
        return self.trie.sequence(int(key_id)).tolist()


class KeySpace:
    """Trie value = KB key id, so a decoded leaf maps straight to (S, P, M) and its objects.

    `trie` is a saved one (with its overlay) for this KB and tokenizer; by default it is built
    from the KB's keys (deleted keys left out, ids kept)."""

    def __init__(self, kb: KnowledgeBase, tokenizer: Tokenizer, order: str, trie: KeyTrie | None = None):
        self.kb, self.order, self.sep_id = kb, order, tokenizer.sep_id
        if trie is None:
            live, first = kb.live_ids(), {}
            for i in live:
                first.setdefault(tuple(encode_key(tokenizer, kb.keys[i], order)), i)
            if len(first) < len(live):
                log.warning("%d KB keys encode to the same tokens as another key under this tokenizer (characters it "
                            "cannot represent); only the first of each can be decoded", len(live) - len(first))
            trie = Trie.build(list(first), list(first.values()))
        self.trie = trie
        self.key_tokens = KeyTokens(trie)
