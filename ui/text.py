"""Text for the page: what people typed (file and class names) put into Markdown safely, and estimates in words."""

import re

_MARKDOWN_PUNCTUATION = re.compile(r"([!-/:-@\[-`{-~])")


def verbatim(text: str) -> str:
    """`text` for Markdown (st.markdown, captions, alerts), shown exactly as typed.

    A backslash before every ASCII punctuation mark: a file named `*draft* [x](y) $z$` makes no
    bold, link, LaTeX or colour directive.
    """
    return _MARKDOWN_PUNCTUATION.sub(r"\\\1", text)


def duration(seconds: float) -> str:
    """ "about 2 min 05 s" in words, for an estimate."""
    whole = max(1, round(seconds))
    minutes, rest = divmod(whole, 60)
    return f"about {minutes} min {rest:02d} s" if minutes else f"about {rest} s"


def counted(count: int, noun: str, plural: str | None = None) -> str:
    """ "1 group", "2 groups", "1,204 images": a count with its noun in agreement.

    `plural` for the irregular ones ("entry" -> "entries"); nouns ending in s, x, ch or sh take "es".
    """
    if count == 1:
        return f"1 {noun}"
    if plural is None:
        plural = f"{noun}es" if noun.endswith(("s", "x", "ch", "sh")) else f"{noun}s"
    return f"{count:,} {plural}"


ELLIPSIS = "…"


def short_name(name: str, limit: int = 16) -> str:
    """A file name cut in the middle to at most `limit` characters, its start and its extension kept
    ("IMG_2024…4567.jpg"): under a thumbnail, a long name would otherwise wrap inside a word."""
    if len(name) <= limit:
        return name
    tail = max(1, (limit - 1) // 2)
    return name[: limit - 1 - tail] + ELLIPSIS + name[-tail:]
