"""Search text, pure: what is indexed for a field and what a query asks for.

Both sides fold text the same way, in Python rather than in SQL (no `unaccent` needed):
lower case, accents off, every run of anything but letters and digits a single space.
So "T-Rex", "t rex" and "T Rex" are the same words, and each pair of neighbouring words is
also indexed joined ("trex"), so a query written without the hyphen or space finds it too.

A query becomes a `to_tsquery` expression over these words only (letters, digits,
spaces, so nothing in it can break the expression): every word is a prefix (type-ahead:
"flash" finds "flashlight"), a word that is no word's start in the vocabulary also matches
its nearest vocabulary words by trigram similarity (typos: "materal" finds "material"),
and two neighbouring words may also match joined. `-word` excludes.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise

MAX_QUERY_WORDS = 8  # words past this are ignored: nobody types more into a search box
MIN_FUZZY_LENGTH = 3  # shorter words have too few trigrams to tell a typo from another word


def fold(text: str) -> str:
    """Lower case, no accents, only letters and digits between single spaces."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    kept = (c if c.isalnum() else " " for c in decomposed if not unicodedata.combining(c))
    return " ".join("".join(kept).split())


def words(text: str) -> list[str]:
    return fold(text).split()


def joined_pairs(items: Sequence[str]) -> list[str]:
    """Each two neighbouring words written together: ["t", "rex"] → ["trex"]."""
    return [a + b for a, b in pairwise(items)]


def index_text(*texts: str, pairs: bool = True) -> str:
    """What the tsvector of these texts is built from: their words and, with `pairs`, each
    text's neighbouring words joined (not across texts: a title and a tag are not a phrase)."""
    out: list[str] = []
    for text in texts:
        found = words(text)
        out.extend(found)
        if pairs:
            out.extend(joined_pairs(found))
    return " ".join(out)


def vocabulary(texts: Iterable[str]) -> set[str]:
    """The words worth proposing for a typo: two letters or more, not only digits."""
    found: set[str] = set()
    for text in texts:
        found.update(w for w in text.split() if len(w) >= 2 and not w.isdigit())
    return found


@dataclass(frozen=True)
class ParsedQuery:
    include: tuple[str, ...]
    exclude: tuple[str, ...]

    @property
    def fuzzy_candidates(self) -> list[str]:
        """The words that may be typos (looked up in the vocabulary)."""
        return [w for w in dict.fromkeys(self.include) if len(w) >= MIN_FUZZY_LENGTH]


def parse_query(q: str) -> ParsedQuery:
    """Words to find, and words after a leading `-` to exclude. Quotes and other signs are
    separators: "t-rex" is the words t and rex."""
    include: list[str] = []
    exclude: list[str] = []
    for token in q.split():
        if token.startswith("-") and len(token) > 1:
            exclude.extend(words(token[1:]))
        else:
            include.extend(words(token))
    return ParsedQuery(tuple(include[:MAX_QUERY_WORDS]), tuple(dict.fromkeys(exclude)))


def tsquery(parsed: ParsedQuery, similar: Mapping[str, Sequence[str]] | None = None) -> str:
    """The `to_tsquery('english', ...)` text of a query; "" when it has no word to find.

    Excluded words are not in it (ts_rank does not rank negations well): the search
    removes what matches any of them apart.
    `similar` maps a word to vocabulary words it may be a typo of (they match whole, not as
    prefixes). Without it, the query is the exact one (used to rank exact matches higher).
    """
    if not parsed.include:
        return ""
    similar = similar or {}

    def term(word: str) -> str:
        alternatives = [f"{word}:*", *(s for s in similar.get(word, ()) if s != word)]
        return alternatives[0] if len(alternatives) == 1 else f"({' | '.join(alternatives)})"

    include = list(parsed.include)
    variants = [" & ".join(term(w) for w in include)]
    for i in range(len(include) - 1):  # "t rex" also as "trex"
        merged = [*include[:i], include[i] + include[i + 1], *include[i + 2 :]]
        variants.append(" & ".join(term(w) for w in merged))
    return variants[0] if len(variants) == 1 else " | ".join(f"({v})" for v in variants)
