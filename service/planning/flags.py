"""Yes/no words: the one reading of a flag written as text (SPEC 3, 4).

Upstream systems write flags such as ``failed_underwriting`` as numbers or as
words, and operators write configuration flags in environment variables; both
are read with these words, case-insensitive and with surrounding spaces
ignored.
"""

from __future__ import annotations

TRUE_WORDS = frozenset({"1", "true", "yes", "on", "t", "y"})
FALSE_WORDS = frozenset({"0", "false", "no", "off", "f", "n"})


def parse_flag(text: str) -> bool | None:
    """True or False for a yes/no word, None for anything else."""
    word = text.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    return None
