"""Escaping for every medium a reviewer reads: Markdown, Mermaid, the terminal.

Cards and recipes come from pull requests, so any string they hold may be hostile.
`card_files.parse_card` refuses non-identifier names at the edge; these functions are
the defence in depth at the output: whatever reaches a rendered card diff, a Mermaid
graph or a terminal table is escaped for that medium, so a field the edge did not check
(or a check that changes later) still cannot add a link, an HTML tag, a Mermaid `click`
line or a terminal control sequence. One function per medium; each is total (any
object in, text out) and idempotence is not promised (escape once, at the output).
"""

from __future__ import annotations

import re

_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")  # a tab is only whitespace

# Markdown (GitHub's): HTML and link syntax become literal text, and a table cell stays
# one cell on one line. `&` first, so the entities written here are not re-read; `\`
# before the characters escaped with it, so an input `\|` cannot un-escape its pipe.
_MARKDOWN = [("&", "&amp;"), ("<", "&lt;"), (">", "&gt;"), ("\\", "\\\\"), ("|", "\\|"),
             ("`", "\\`"), ("[", "\\["), ("]", "\\]")]


def _one_line(value: object) -> str:
    """Line breaks as spaces; other control characters as visible escapes (`\\x1b`)."""
    return _CONTROL.sub(lambda m: repr(m.group())[1:-1] if m.group() not in "\n\r" else " ",
                        str(value))


def markdown(value: object) -> str:
    """Inline Markdown text, safe in a table cell, a heading or prose: no HTML, no link
    or image, no code span, no cell break, no line break. (Emphasis is left alone: it
    cannot carry anything, and escaping `_` would garble every task name.)"""
    text = _one_line(value)
    for raw, escaped in _MARKDOWN:
        text = text.replace(raw, escaped)
    return text


_PLAIN = re.compile(r"[\w.,:+/@~^=\[\]-]+")  # identifiers, revisions, metric keys, key paths


def markdown_code(value: object) -> str:
    """A plain identifier (a name, a method, a revision) as an inline code span; anything
    else as escaped text (`markdown`), not in a span: a code span would keep `<img …>`
    inert, but its raw text would still be there for any renderer less strict than
    GitHub's, and a `|` inside one still splits a table cell."""
    text = str(value)
    return f"`{text}`" if _PLAIN.fullmatch(text) else markdown(text)


# Mermaid: label text inside `["…"]` is decoded from Mermaid's `#name;` entity codes, so
# the quote that would close the label, angle brackets (HTML labels) and `#` itself are
# written as codes; a backtick would start a Markdown string.
_MERMAID = [("#", "#35;"), ('"', "#quot;"), ("<", "#lt;"), (">", "#gt;"), ("`", "#96;")]


def mermaid_label(value: object) -> str:
    """Text for inside a Mermaid node label `["…"]`: it cannot close the label, add a
    statement (`click …`), or carry HTML."""
    text = _one_line(value)
    for raw, escaped in _MERMAID:
        text = text.replace(raw, escaped)
    return text


def mermaid_id(value: object, prefix: str = "n_") -> str:
    """A Mermaid node id: ASCII letters, digits and `_` only (anything else becomes `_`)."""
    return prefix + "".join(c if c.isascii() and c.isalnum() else "_" for c in str(value))


def terminal(value: object) -> str:
    """One line of plain terminal text: line breaks as spaces, other control characters
    (ANSI escapes, backspaces) as visible escapes, so a value cannot move the cursor,
    recolour, or rewrite a line."""
    return _one_line(value)


def terminal_lines(text: str) -> str:
    """Multi-line terminal text (a card, a report): each line as `terminal` writes it."""
    return "\n".join(terminal(line) for line in str(text).split("\n"))


def rich_text(value: object) -> str:
    """Text for a `rich` markup string (tables, console prints): markup brackets escaped
    (`[link=…]`, `[/]`) and control characters shown as escapes."""
    from rich.markup import escape

    return escape(terminal(value))
