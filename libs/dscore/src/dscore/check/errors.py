"""Errors raised by `dscore.check` for input it cannot accept.

Every problem with a history (bad EDN syntax, a malformed operation, a completion that
pairs with nothing, a value the model cannot interpret) raises `HistoryError`, a
`ValueError`, carrying the 1-based source line when the history came from text and the
0-based operation index when it is known. Callers (the CLI) map it to "bad input".
"""

from __future__ import annotations


class HistoryError(ValueError):
    """A history that cannot be read or checked; `line` is 1-based, `index` 0-based."""

    def __init__(
        self,
        message: str,
        *,
        line: int | None = None,
        index: int | None = None,
        source: str | None = None,
    ) -> None:
        self.message = message
        self.line = line
        self.index = index
        self.source = source
        super().__init__(self._render())

    def _render(self) -> str:
        where = []
        if self.source is not None:
            where.append(self.source)
        if self.line is not None:
            where.append(f"line {self.line}")
        elif self.index is not None:
            where.append(f"op index {self.index}")
        return f"{': '.join(where)}: {self.message}" if where else self.message

    def with_source(self, source: str) -> HistoryError:
        """The same error, attributed to a file (keeps the concrete subclass)."""
        return type(self)(self.message, line=self.line, index=self.index, source=source)


class EdnSyntaxError(HistoryError):
    """Text that is not valid EDN (within the subset `dscore.check.edn` reads)."""
