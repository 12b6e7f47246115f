"""Endpoint members and webhooks reach only where ARENA_OUTBOUND_ALLOW lets them, never the arena itself.

Against real HTTP servers on loopback: what production settings refuse, what listing it accepts,
the arena's own Redis, database and web ports, names that resolve to internal addresses, redirects,
and the short, printable error a failing endpoint leaves on its run's page.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from urllib.parse import urlsplit

import pytest
from django.core.exceptions import ValidationError
from django.db import connection
from django.utils import timezone

from arena.alerts import services as alerts
from arena.alerts.models import Channel, Delivery, Notice, RegressionAlert, TeamNotifications
from arena.evaluations.models import RunEntry
from arena.evaluations.services import create_run
from arena.registry.backends import backend_for
from arena.registry.models import Entry, Kind
from arena.registry.services import register_model
from arena.teams.models import ApiToken
from ensembles import net
from ensembles.backends import BackendError, DecodingParams
from tests.factories import EntryFactory, RunFactory, SuiteFactory
from tests.helpers import ROOT, csrf_client, finished, post_form, wait_for

pytestmark = pytest.mark.django_db
HOSTILE = b"\x00\x1b[31mno such model\r\n\x07\xe2\x80\xae<script>alert(1)</script>" + b"A" * (4 * 1024 * 1024)


@pytest.fixture
def production(settings):
    """The allow-list production settings give: public addresses only."""
    settings.ARENA_OUTBOUND_ALLOW = []
    return settings


@pytest.fixture
def dns(monkeypatch):
    """The test's own name server: names mapped here resolve, through every policy the arena builds."""
    names: dict[str, list[str]] = {}
    real = net.resolve

    def resolve(host: str, port: int) -> list[str]:
        return names[host] if host in names else real(host, port)

    monkeypatch.setattr(net, "resolve", resolve)
    return names


def endpoint(api, name: str, base_url: str):
    return api("post", "/entries", {"name": name, "kind": "openai", "config": {"base_url": base_url, "model": "m"}})


def refusal(response) -> str:
    assert response.status_code == 422, response.content
    return response.json()["detail"]["config"][0]


def test_production_settings_allow_no_internal_address_and_a_bad_entry_stops_the_start(settings, tmp_path):
    def start(**env) -> subprocess.CompletedProcess:
        code = "import django; django.setup(); from django.conf import settings; print(settings.ARENA_OUTBOUND_ALLOW)"
        base = {k: v for k, v in os.environ.items() if not k.startswith("ARENA_")}
        env = {**base, "DJANGO_SETTINGS_MODULE": "arena.settings", "ARENA_DATA_DIR": str(tmp_path), **env}
        return subprocess.run(
            [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False
        )

    production = start(ARENA_ENV="production", ARENA_SECRET_KEY="x" * 50)
    assert production.stdout.strip() == "[]", production.stderr
    bad = start(ARENA_OUTBOUND_ALLOW="10.0.0.0/8,http://x")
    assert bad.returncode != 0 and "ARENA_OUTBOUND_ALLOW: 'http://x' is neither" in bad.stderr
    if "ARENA_OUTBOUND_ALLOW" not in os.environ:  # the embedded default, as these tests run
        assert settings.ARENA_OUTBOUND_ALLOW == ["127.0.0.0/8", "::1"]


def test_in_production_a_loopback_endpoint_is_a_422_naming_base_url_then_registers_once_allowlisted(
    api, production, serve
):
    server = serve()
    message = refusal(endpoint(api, "local", f"{server.url}/v1"))
    assert f"base_url {server.url}/v1 is refused" in message and "not a public address (loopback)" in message
    assert not Entry.objects.exists() and server.received == []

    production.ARENA_OUTBOUND_ALLOW = ["127.0.0.1"]
    assert endpoint(api, "local", f"{server.url}/v1").status_code == 201
    generation = backend_for(Entry.objects.get(name="local")).generate(["2+2?"], DecodingParams())
    # Registration's one-token test call, then the generation.
    assert generation[0].text == "4" and server.paths == ["/v1/chat/completions"] * 2


@pytest.mark.parametrize("address", ["10.1.2.3", "192.168.1.20", "169.254.169.254", "fd00::7"])
def test_a_name_that_resolves_to_a_private_address_is_refused_at_registration(api, dns, address):
    dns["models.example.test"] = [address]
    message = refusal(endpoint(api, "private", "https://models.example.test/v1"))
    assert "base_url https://models.example.test/v1 is refused" in message and address in message
    assert not Entry.objects.exists()


def test_the_arenas_own_redis_database_and_web_ports_are_refused_though_loopback_is_allowed(api, settings, serve):
    web = serve()
    settings.ARENA_WEB_PORT = web.port
    redis_port = urlsplit(settings.REDIS_URL).port or 6379
    db_port = int(connection.settings_dict["PORT"] or 5432)
    own = [f"http://127.0.0.1:{redis_port}", f"http://localhost:{db_port}", web.url, f"http://[::1]:{web.port}"]
    for i, base in enumerate(own):
        assert "one of this server's own services" in refusal(endpoint(api, f"own-{i}", f"{base}/v1"))
    assert not Entry.objects.exists() and web.received == []
    # A server of one's own on loopback is fine.
    mine = serve()
    assert endpoint(api, "mine", f"{mine.url}/v1").status_code == 201


def test_a_name_that_resolves_elsewhere_after_registration_is_refused_when_called(client, team, production, dns, serve):
    server = serve()
    dns["rebind.example.test"] = ["93.184.216.34"]
    url = f"http://rebind.example.test:{server.port}/v1"
    # Registered while the name pointed at a public address (which this machine cannot reach to test-call).
    entry = EntryFactory(
        team=team, name="rebind", kind=Kind.OPENAI, config={"base_url": url, "model": "m", "max_retries": 0}
    )
    dns["rebind.example.test"] = ["127.0.0.1"]
    with pytest.raises(BackendError, match=r"base_url .* is refused: rebind.example.test:\d+ \(127.0.0.1\)"):
        backend_for(entry).generate(["2+2?"], DecodingParams())
    token = ApiToken.issue(team, "t")[1]
    body = json.dumps({"model": "rebind", "messages": [{"role": "user", "content": "2+2?"}]})
    served = client.post(
        "/v1/chat/completions", body, content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {token}"
    )
    assert served.status_code == 422 and "is refused" in served.json()["error"]["message"]
    assert server.received == []


def test_a_webhook_on_a_refused_address_is_a_clear_error_when_set(team, production, settings):
    with pytest.raises(ValidationError) as info:
        alerts.set_webhook(team, "http://127.0.0.1:9/hook")
    assert "http://127.0.0.1:9/hook is refused" in info.value.message_dict["webhook_url"][0]
    settings.ARENA_OUTBOUND_ALLOW = ["127.0.0.0/8"]
    redis_port = urlsplit(settings.REDIS_URL).port or 6379
    with pytest.raises(ValidationError, match="own services"):
        alerts.set_webhook(team, f"http://127.0.0.1:{redis_port}/hook")
    assert alerts.set_webhook(team, "http://127.0.0.1:9/hook").webhook_url == "http://127.0.0.1:9/hook"


def test_the_webhook_page_names_a_refused_url(team, owner, production):
    page = csrf_client(owner)
    response = post_form(page, f"/t/{team.slug}/schedules/webhook/", {"webhook_url": "http://169.254.169.254/latest"})
    assert response.status_code == 302
    shown = page.get(response["Location"]).content.decode()
    assert "webhook_url: http://169.254.169.254/latest is refused" in shown and "link-local" in shown
    assert not TeamNotifications.objects.filter(team=team).exclude(webhook_url="").exists()


@pytest.fixture
def notice(team):
    suite = SuiteFactory(team=team, size=4)
    run = RunFactory(suite=suite, finished_at=timezone.now())
    alert = RegressionAlert.objects.create(run=run, regressed=1)

    def to(url: str) -> Notice:
        return Notice.objects.create(
            alert=alert, channel=Channel.WEBHOOK, target=url, key="k", next_attempt_at=timezone.now()
        )

    return to


def test_a_webhook_redirect_to_the_arenas_own_port_is_not_followed(settings, serve, notice):
    own = serve()
    settings.ARENA_WEB_PORT = own.port
    hop = serve(status=307, body=b"", headers={"Location": f"{own.url}/v1/chat/completions"})
    sent = alerts.send_notice(notice(f"{hop.url}/hook").pk)
    assert sent.state == Delivery.FAILED and sent.status == 307 and "answered 307" in sent.error
    assert hop.paths == ["/hook"] and own.received == []


def test_a_stored_webhook_that_is_now_refused_fails_without_a_request(production, serve, notice):
    server = serve()
    sent = alerts.send_notice(notice(f"{server.url}/hook").pk)
    assert sent.state == Delivery.FAILED and "the webhook URL is refused" in sent.error
    assert server.received == []


def test_a_webhooks_huge_error_body_is_cut_to_a_printable_snippet(serve, notice):
    server = serve(status=500, body=HOSTILE)
    with pytest.raises(alerts.NoticeRetry):
        alerts.send_notice(notice(f"{server.url}/hook").pk)
    error = Notice.objects.get().error
    assert error.startswith("the webhook answered 500: [31mno such model")
    assert len(error) < 300 and error.isprintable()


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_failing_endpoints_huge_hostile_answer_reaches_its_run_page_short_and_printable(worker, team, owner, serve):
    server = serve()
    entry = register_model(
        team, name="hostile", kind="openai", config={"base_url": f"{server.url}/v1", "model": "m", "max_retries": 0}
    )
    server.status, server.body = 400, HOSTILE  # it answered its test call at registration, and fails since
    run = create_run(team, SuiteFactory(team=team, size=4), [entry], user=owner)
    run = wait_for(lambda: finished(run.pk), timeout=240, what="the run to fail")
    error = RunEntry.objects.get(run=run, entry=entry).error
    assert "HTTP 400" in error and "no such model" in error
    assert len(error) < 600 and error.isprintable() and "\u202e" not in error
    page = csrf_client(owner).get(f"/t/{team.slug}/runs/{run.pk}/").content.decode()
    assert "no such model" in page and "A" * 300 not in page and "<script>alert(1)" not in page
