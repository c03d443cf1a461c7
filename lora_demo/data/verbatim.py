"""Names inside translated messages that must stay as they are: a dataset called "seed", the column "output".

lora_demo.i18n.render leaves plain-string parameters as they are, so a name passed plainly already stays; the data
engine marks its names explicitly anyway (a dataset named "seed" must never become the Train tab's "随机种子", even if
a Msg-typed name reaches render). `verbatim(name)` is a Msg whose English text is the name and which renders as the
name in every language; it survives to_json (as the plain name) and pickling.
"""

from __future__ import annotations

from lora_demo.i18n import Msg


class _Raw:
    """Not a str, so render() leaves it alone; formats as the text it holds."""

    __slots__ = ("text",)

    def __init__(self, text: str):
        self.text = text

    def __format__(self, spec: str) -> str:
        return format(self.text, spec)

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return repr(self.text)

    def __reduce__(self):
        return (_Raw, (self.text,))


class Verbatim(Msg):
    def __new__(cls, text):
        text = str(text)
        obj = str.__new__(cls, text)
        obj.template, obj.params = "{text}", {"text": _Raw(text)}
        return obj

    def to_json(self) -> str:
        return str.__str__(self)


def verbatim(text) -> Verbatim:
    """`text` (a name, a column, a format id) for a message parameter, never translated."""
    return text if isinstance(text, Verbatim) else Verbatim(text)
