"""Every problem of a batch file, found in one pass and told at once, one line each.

An operator fixing a file wants the whole list, not one error per try: each
problem names the file, the line and the field; past :data:`MAX_REPORTED`
the rest are only counted. A key that is not one of ours is told with the
nearest that is ("did you mean"), since it is nearly always a typo.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Final

from asyncovf.errors import BatchError

#: Problems shown one by one; the others are counted ("… and 7 more").
MAX_REPORTED: Final = 20
#: How close a key must be to one of ours to be suggested (difflib's ratio): a
#: swapped or missing letter is ("clutser", "datastor"), another word is not
#: ("colour" is not "cluster").
SUGGESTION_CUTOFF: Final = 0.7


class BatchErrors(BatchError):
    """Several problems of one batch file: :attr:`errors` (up to :data:`MAX_REPORTED`)
    and how many more there were. Its text is the first problem, so a caller that
    shows one line still shows a true one; :meth:`lines` is all of them."""

    def __init__(self, errors: Iterable[BatchError], more: int = 0) -> None:
        self.errors, self.more = tuple(errors), more
        first = self.errors[0]
        # The first problem's place and text, as BatchError.__init__ would word them.
        Exception.__init__(self, str(first))
        self.file, self.line, self.where = first.file, first.line, first.where

    def lines(self) -> list[str]:
        """One line per problem, then "… and N more" when some were only counted."""
        return [str(error) for error in self.errors] + (
            [f"… and {self.more} more {'problem' if self.more == 1 else 'problems'} "
             "in the batch file"] if self.more else [])


class BatchProblems:
    """The problems found so far in one batch file, collected as the file is checked;
    ``line_of(mapping, key)`` is the line a key was read from."""

    def __init__(self, line_of: Callable[[Any, str], int | None],
                 limit: int = MAX_REPORTED) -> None:
        self.line_of, self.limit = line_of, limit
        self.errors: list[BatchError] = []
        self.more = 0

    def __bool__(self) -> bool:
        return bool(self.errors)

    def add(self, error: BatchError) -> None:
        for one in error.errors if isinstance(error, BatchErrors) else (error,):
            if len(self.errors) < self.limit:
                self.errors.append(one)
            else:
                self.more += 1
        if isinstance(error, BatchErrors):
            self.more += error.more

    @contextmanager
    def collecting(self) -> Iterator[None]:
        """Run the block; a :class:`BatchError` it raises is noted, and checking goes on."""
        try:
            yield
        except BatchError as error:
            self.add(error)

    def fatal(self, error: BatchError) -> BatchError:
        """``error``, after what was found before it: for a problem past which the
        file cannot be read further (its shape, a limit)."""
        self.add(error)
        return self.error()

    def error(self) -> BatchError:
        """What was found: the one problem itself, or all of them."""
        if len(self.errors) == 1 and not self.more:
            return self.errors[0]
        return BatchErrors(self.errors, self.more)

    def raise_any(self) -> None:
        if self.errors:
            raise self.error()

    def check_keys(self, mapping: Mapping[str, Any], allowed: frozenset[str], file: str,
                   where: str) -> bool:
        """A problem for each key of ``mapping`` that is not ``allowed``, naming the
        nearest allowed key when one is close, else them all; True if there was none."""
        unknown = [key for key in mapping if key not in allowed]
        for key in unknown:
            near = difflib.get_close_matches(str(key), allowed, n=1, cutoff=SUGGESTION_CUTOFF)
            hint = (f"did you mean {near[0]!r}?" if near
                    else "expected one of: " + ", ".join(sorted(allowed)))
            self.add(BatchError(file, self.line_of(mapping, key),
                                f"{where}.{key}" if where else str(key), f"unknown key; {hint}"))
        return not unknown

    def connection(self, raw: Any, allowed: frozenset[str], file: str,
                   line: int | None) -> Mapping[str, str | bool]:
        """The ``connection:`` block (at ``line``), its problems noted; one that is not
        a mapping is raised, as nothing in it can be read."""
        if raw is None:
            return {}
        if not isinstance(raw, dict):
            raise BatchError(file, line, "connection", "must be a mapping")
        self.check_keys(raw, allowed, file, "connection")
        for key, value in raw.items():
            if key == "insecure" and not isinstance(value, bool):
                problem = "must be true or false"
            elif key in allowed - {"insecure"} and not isinstance(value, str):
                problem = "must be a string"
            else:
                continue
            self.add(BatchError(file, self.line_of(raw, key), f"connection.{key}", problem))
        return dict(raw)


__all__ = ["MAX_REPORTED", "SUGGESTION_CUTOFF", "BatchErrors", "BatchProblems"]
