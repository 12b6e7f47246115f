"""Pages: the team's schedules and its queue of runs."""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from arena.alerts.queries import notifications_for
from arena.benchmarks.models import Suite
from arena.registry.models import Entry
from arena.registry.services import runnable
from arena.schedules import queries, services
from arena.schedules.models import NIGHTLY, Firing, Refresh, Schedule
from arena.teams.access import get_owned, membership_for, team_for
from arena.teams.models import Role, Team


class ScheduleForm(forms.Form):
    name = forms.CharField(max_length=100)
    suite = forms.ChoiceField()
    entries = forms.MultipleChoiceField()
    judge = forms.ChoiceField(required=False)
    cron = forms.CharField(max_length=120, initial=NIGHTLY, help_text="minute hour day-of-month month day-of-week")
    timezone = forms.CharField(max_length=64, initial="UTC")
    refresh = forms.ChoiceField(choices=Refresh.choices, initial=Refresh.CHANGED, required=False)
    splits = forms.MultipleChoiceField(required=False, help_text="none: the suite's default (test)")
    enabled = forms.BooleanField(required=False, initial=True)

    def __init__(self, team: Team, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # A merge not built into weights can neither run nor judge, so it is not offered.
        entries = list(runnable(Entry.objects.filter(team=team)).values_list("name", "kind"))
        suites = list(Suite.objects.filter(team=team).order_by("name").values_list("name", "manifest"))
        self.fields["suite"].choices = [(n, n) for n in dict.fromkeys(name for name, _ in suites)]
        # Every split any of the team's suites has; the chosen suite's own are checked on saving.
        splits = sorted({split for _, manifest in suites for split in manifest.get("splits", ["test"])})
        self.fields["splits"].choices = [(n, n) for n in splits]
        self.fields["entries"].choices = [(n, n) for n, _ in entries]
        self.fields["judge"].choices = [("", "none")] + [(n, n) for n, kind in entries if kind != "blend"]


def _initial(schedule: Schedule) -> dict:
    return {
        "name": schedule.name,
        "suite": schedule.suite_name,
        "entries": [e.name for e in schedule.entries.all()],
        "judge": schedule.judge.name if schedule.judge else "",
        "cron": schedule.cron,
        "timezone": schedule.timezone,
        "refresh": schedule.refresh,
        "splits": schedule.splits,
        "enabled": schedule.enabled,
    }


def _save(form: ScheduleForm, team: Team, user, schedule: Schedule | None = None) -> Schedule | None:
    """The saved schedule, or None with the problems put on the form's fields."""
    if not form.is_valid():
        return None
    data = form.cleaned_data
    try:
        return services.save_schedule(
            team,
            name=data["name"],
            suite=data["suite"],
            entries=data["entries"],
            cron=data["cron"],
            timezone_name=data["timezone"],
            refresh=data["refresh"] or Refresh.CHANGED,
            enabled=data["enabled"],
            judge=data["judge"] or None,
            splits=data["splits"],
            user=user,
            schedule=schedule,
        )
    except ValidationError as exc:
        form.add_error(None, exc)
        return None


@login_required
@require_http_methods(["GET", "POST"])
def schedule_list(request, team: str):
    membership = membership_for(request.user, team)
    t = membership.team
    form = ScheduleForm(t, initial={"cron": NIGHTLY, "timezone": "UTC", "enabled": True})
    status = 200
    if request.method == "POST":
        membership_for(request.user, team, Role.MEMBER)
        form = ScheduleForm(t, request.POST)
        schedule = _save(form, t, request.user)
        if schedule is not None:
            messages.success(request, f"Scheduled {schedule.name}: next run {_when(schedule)}.")
            return redirect("schedules", team=t.slug)
        status = 422
    schedules = Schedule.objects.filter(team=t).select_related("judge").prefetch_related("entries")
    rows = [{"schedule": s, "next_run_at": services.next_fire(s)} for s in schedules]
    return render(
        request,
        "schedules/schedules.html",
        {
            "team": t,
            "membership": membership,
            "can_edit": membership.allows(Role.MEMBER),
            "is_owner": membership.allows(Role.OWNER),
            "rows": rows,
            "form": form,
            # The owner sets the regression webhook here (arena/alerts/views.py takes the form).
            "webhook_url": notifications_for(t).webhook_url if membership.allows(Role.OWNER) else "",
        },
        status=status,
    )


def _when(schedule: Schedule) -> str:
    at = services.next_fire(schedule)
    return f"{at:%Y-%m-%d %H:%M} {schedule.timezone}" if at else "never (paused)"


@login_required
@require_http_methods(["GET", "POST"])
def schedule_detail(request, team: str, schedule_id: int):
    membership = membership_for(request.user, team)
    t = membership.team
    schedule = get_owned(Schedule.objects.select_related("judge").prefetch_related("entries"), t, pk=schedule_id)
    form = ScheduleForm(t, initial=_initial(schedule))
    status = 200
    if request.method == "POST":
        membership_for(request.user, team, Role.MEMBER)
        form = ScheduleForm(t, request.POST)
        if _save(form, t, request.user, schedule) is not None:
            messages.success(request, f"Saved {form.cleaned_data['name']}: next run {_when(schedule)}.")
            return redirect("schedule", team=t.slug, schedule_id=schedule.pk)
        status = 422
    return _detail_page(request, membership, schedule, form, status)


def _detail_page(request, membership, schedule: Schedule, form: ScheduleForm, status: int, busy=None):
    firings = Firing.objects.filter(schedule=schedule).select_related("run").order_by("-slot")[:50]
    return render(
        request,
        "schedules/schedule.html",
        {
            "team": membership.team,
            "schedule": schedule,
            "can_edit": membership.allows(Role.MEMBER),
            "form": form,
            "next_run_at": services.next_fire(schedule),
            "firings": firings,
            "busy": busy,
        },
        status=status,
    )


@login_required
@require_http_methods(["POST"])
def schedule_run(request, team: str, schedule_id: int):
    """Run now: the schedule fires at once (a worker starts the run); 409 while its last run is unfinished."""
    membership = membership_for(request.user, team, Role.MEMBER)
    t = membership.team
    schedule = get_owned(Schedule.objects.select_related("judge").prefetch_related("entries"), t, pk=schedule_id)
    try:
        services.run_now(schedule, user=request.user)
    except services.ScheduleBusy as exc:
        return _detail_page(request, membership, schedule, ScheduleForm(t, initial=_initial(schedule)), 409, exc)
    messages.success(request, f"{schedule.name} fires now: its run appears below once a worker has started it.")
    return redirect("schedule", team=t.slug, schedule_id=schedule.pk)


@login_required
@require_http_methods(["POST"])
def schedule_delete(request, team: str, schedule_id: int):
    t = team_for(request.user, team, Role.MEMBER)
    schedule = get_owned(Schedule.objects.all(), t, pk=schedule_id)
    services.delete_schedule(schedule)
    messages.success(request, f"Deleted the schedule {schedule.name}.")
    return redirect("schedules", team=t.slug)


@login_required
def queue(request, team: str):
    t = team_for(request.user, team)
    state = request.GET.get("state", "")
    if state not in queries.QUEUE_STATES:
        state = ""
    page = Paginator(queries.queue_runs(t, state or None), 50).get_page(request.GET.get("page"))
    return render(
        request,
        "schedules/queue.html",
        {
            "team": t,
            "state": state,
            "counts": queries.queue_counts(t),
            "page": page,
            "rows": [queries.queue_row(r) for r in page],
            "upcoming": queries.upcoming(t),
            "not_started": queries.recent_firings_without_run(t),
        },
    )
