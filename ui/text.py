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
