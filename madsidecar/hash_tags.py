"""Redis Cluster hash tags built from user-given names."""

from __future__ import annotations

from typing import Final

_ESCAPES: Final = str.maketrans({"%": "%25", "{": "%7B", "}": "%7D"})


def escape_tag(text: str) -> str:
    """`text` with `%`, `{` and `}` percent-encoded, so that it cannot end a hash tag
    early. Names almost never hold them; the scan for them costs far less than
    `str.translate`, which raises a KeyError inside for every character it keeps."""
    if "{" in text or "}" in text or "%" in text:
        return text.translate(_ESCAPES)
    return text
