"""What the dashboard's forms share: their errors as lines, and a refused form's values kept for the page
the error redirects to (each form posts to its own app's view, and every one comes back to the dashboard)."""

from __future__ import annotations

from django.core.exceptions import ValidationError

# The session key under which a refused form's values wait for the dashboard.
SENT_FORM = "dashboard_form"


def errors(exc: ValidationError) -> list[str]:
    """One line per message, prefixed with its field where it has one."""
    if hasattr(exc, "message_dict"):
        return [f"{field}: {msg}" for field, msgs in exc.message_dict.items() for msg in msgs]
    return list(exc.messages)


def keep_sent(request, form: str, fields: tuple[str, ...], lists: tuple[str, ...] = ()) -> None:
    """Keep a refused form's values (never an API key) for the dashboard the error redirects to."""
    request.session[SENT_FORM] = {
        "form": form,
        **{f: request.POST.get(f, "") for f in fields},
        **{f: request.POST.getlist(f) for f in lists},
    }
