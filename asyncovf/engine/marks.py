"""The import mark: how a VM on vCenter says whether asyncovf's import of it finished.

ImportVApp's spec sets the extraConfig key :data:`IMPORT_MARK_KEY` to
``importing <token>`` (:func:`unfinished_mark`); once the lease is complete the
job sets it to :data:`IMPORT_FINISHED`. A VM whose import never finished (a
killed process) keeps ``importing``: ``--on-conflict skip`` must not count it
done, since vCenter deletes it once its lease times out.

The token is new for every ImportVApp call. It is how a job whose ImportVApp
answer was lost knows the VM of its name is its own: the name is not asked for
before ImportVApp (vCenter's DuplicateName says it is taken), so a VM of that
name may be one that was there before and made ImportVApp fail.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from typing import Any, Final

#: The extraConfig key of the mark.
IMPORT_MARK_KEY: Final = "asyncovf.import"
#: The mark of an import under way (alone, as versions before the token wrote it,
#: or followed by a space and the import's token).
IMPORT_UNFINISHED: Final = "importing"
#: The mark of a finished import.
IMPORT_FINISHED: Final = "done"


def new_token() -> str:
    """A token for one ImportVApp call: 16 hex digits, never reused."""
    return secrets.token_hex(8)


def unfinished_mark(token: str) -> str:
    """The mark ImportVApp's spec carries: unfinished, made by the call of ``token``."""
    return f"{IMPORT_UNFINISHED} {token}"


def mark_of(extra_config: Iterable[Any] | None) -> str | None:
    """The mark in a VM's ``config.extraConfig``, or None when it has none.

    A key has one value on vCenter (ReconfigVM_Task replaces it); vcsim appends
    the new value instead, so the last one is the one in force.
    """
    marks = [option.value for option in extra_config or () if option.key == IMPORT_MARK_KEY]
    return str(marks[-1]) if marks else None


def is_unfinished(mark: str | None) -> bool:
    """The mark says the import never finished (with a token or without)."""
    return mark is not None and (mark == IMPORT_UNFINISHED
                                 or mark.startswith(IMPORT_UNFINISHED + " "))


__all__ = [
    "IMPORT_FINISHED",
    "IMPORT_MARK_KEY",
    "IMPORT_UNFINISHED",
    "is_unfinished",
    "mark_of",
    "new_token",
    "unfinished_mark",
]
