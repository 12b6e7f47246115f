"""Login attempts are rate-limited per username and address (django-axes), on the login page and the admin's."""

from __future__ import annotations

import pytest
from axes.models import AccessAttempt

from tests.factories import UserFactory
from tests.helpers import PASSWORD, csrf_client, post_form

pytestmark = pytest.mark.django_db


def attempt(client, username: str, password: str, url: str = "/login/", **extra):
    client.get(url)
    token = client.cookies["csrftoken"].value
    return client.post(url, {"username": username, "password": password, "csrfmiddlewaretoken": token}, **extra)


def test_wrong_passwords_up_to_the_limit_then_even_the_right_one_is_refused_with_429(owner, settings):
    client = csrf_client()
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        response = attempt(client, owner.username, "wrong")
        assert response.status_code == 200 and b"did not match" in response.content
    locked = attempt(client, owner.username, "wrong")
    assert locked.status_code == 429
    assert b"Too many login attempts" in locked.content
    right = attempt(client, owner.username, PASSWORD)
    assert right.status_code == 429
    assert "_auth_user_id" not in client.session


def test_the_lock_holds_one_username_from_one_address_only(owner, teammate, settings):
    client = csrf_client()
    for _ in range(settings.AXES_FAILURE_LIMIT):
        attempt(client, owner.username, "wrong")
    # Another user from the same address, and the same user from another address, still log in.
    assert attempt(csrf_client(), teammate.username, PASSWORD).status_code == 302
    elsewhere = attempt(csrf_client(), owner.username, PASSWORD, REMOTE_ADDR="10.0.0.7")
    assert elsewhere.status_code == 302


def test_a_successful_login_clears_the_failures(owner, settings):
    client = csrf_client()
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        attempt(client, owner.username, "wrong")
    assert attempt(client, owner.username, PASSWORD).status_code == 302
    assert not AccessAttempt.objects.filter(username=owner.username, failures_since_start__gt=0).exists()
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        assert attempt(csrf_client(), owner.username, "wrong").status_code == 200


def test_the_admin_login_counts_toward_the_same_limit(settings):
    staff = UserFactory(username="sam", is_staff=True, is_superuser=True)
    client = csrf_client()
    for _ in range(settings.AXES_FAILURE_LIMIT):
        last = attempt(client, staff.username, "wrong", url="/admin/login/")
    assert last.status_code == 429
    assert attempt(client, staff.username, PASSWORD).status_code == 429


def test_signing_up_still_logs_the_new_user_in(settings):
    response = post_form(
        csrf_client(), "/signup/", {"username": "newbie", "password1": PASSWORD, "password2": PASSWORD}
    )
    assert response.status_code == 302 and response["Location"] == "/teams/new/"
