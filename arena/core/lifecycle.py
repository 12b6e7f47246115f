"""What archiving and deleting share: the account a confirmation shows, the refusal (a 409), the flag.

Each app deletes what it owns (registry: entries, benchmarks: suites, evaluations: runs, teams: teams)
and says first what goes with it; the pages confirm with that account and the API answers it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.db.models import Model
from django.shortcuts import redirect, render
from django.utils import timezone


class Refused(Exception):
    """An archive or a deletion that cannot be done now: the message says why and what to do (409)."""


@dataclass
class Account:
    """What a deletion takes: ``goes`` is deleted with the object, ``changes`` is kept but altered, and
    ``refused`` says why it cannot be deleted now (empty: it can)."""

    subject: str
    goes: list[str] = field(default_factory=list)
    changes: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)

    def check(self) -> None:
        if self.refused:
            raise Refused(f"{self.subject} cannot be deleted: {'; '.join(self.refused)}")


def counted(n: int, one: str, many: str | None = None) -> str:
    """``n`` with the noun in its number: "1 score", "3 scores"."""
    return f"{n} {one if n == 1 else (many or one + 's')}"


def names(values, limit: int = 10) -> str:
    """A readable list of names, cut after ``limit``."""
    values = list(values)
    shown = ", ".join(str(v) for v in values[:limit])
    return shown + (f" and {len(values) - limit} more" if len(values) > limit else "")


def set_archived(obj: Model, archived: bool) -> bool:
    """Archive or unarchive ``obj`` (an entry or a suite); whether that changed it. Saved as a row
    change, so the boards' cached snapshots are replaced (arena/leaderboard/receivers.py)."""
    if (obj.archived_at is not None) == archived:  # type: ignore[attr-defined]
        return False
    obj.archived_at = timezone.now() if archived else None  # type: ignore[attr-defined]
    obj.save(update_fields=["archived_at"])
    return True


def confirm_delete(request, *, team, account_of, delete, back: str, done: str, typed: str = ""):
    """A deletion's page: GET shows what goes with it (``account_of()``); its form's POST deletes
    (``delete()``) and goes to ``done``. A POST that is not the form's (no ``confirm``) deletes nothing
    (400); a refusal shows the page again with why (409), a wrongly typed name (``typed``) too (400)."""
    status, error = 200, ""
    if request.method == "POST" and request.POST.get("confirm") != "delete":
        status, error = 400, "confirm the deletion with this page's button"
    elif request.method == "POST":
        try:
            deleted = delete()
        except Refused as exc:
            status, error = 409, str(exc)
        except ValidationError as exc:
            status, error = 400, "; ".join(exc.messages)
        else:
            messages.success(request, f"Deleted {deleted.subject}.")
            return redirect(done)
    context = {"team": team, "account": account_of(), "back": back, "typed": typed, "error": error}
    return render(request, "core/delete.html", context, status=status)
