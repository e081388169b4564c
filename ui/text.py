"""Text from people (file and class names) put into Markdown safely."""

import re

_MARKDOWN_PUNCTUATION = re.compile(r"([!-/:-@\[-`{-~])")


def verbatim(text: str) -> str:
    """`text` for Markdown (st.markdown, captions, alerts), shown exactly as typed.

    A backslash before every ASCII punctuation mark: a file named `*draft* [x](y) $z$` makes no
    bold, link, LaTeX or colour directive.
    """
    return _MARKDOWN_PUNCTUATION.sub(r"\\\1", text)
