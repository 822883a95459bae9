"""The one error type users see: it names the file and the key path at fault."""

from __future__ import annotations


class StudbookError(Exception):
    """A problem with user input, found before any compute.

    `file` is the path a user should open and `key` the dotted key path inside it
    (empty when the whole file is at fault).
    """

    def __init__(self, message: str, file: str | None = None, key: str | None = None):
        self.file = file
        self.key = key
        self.detail = message
        where = ""
        if file:
            where = f"{file}"
            if key:
                where += f": {key}"
            where += ": "
        super().__init__(f"{where}{message}")
