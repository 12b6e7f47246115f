"""Outbound calls keep to their policy, against real HTTP servers on loopback."""

from __future__ import annotations

import pytest

from ensembles.backends import BackendError, BackendOptions, DecodingParams, make_backend
from ensembles.net import OutboundPolicy, OutboundRefused, guarded_client, parse_allowed, post_json, snippet
from tests.loopback import COMPLETION

NOTHING_ALLOWED = OutboundPolicy.configured([])  # what production settings give: public addresses only
UNSPECIFIED = "0.0.0.0"  # noqa: S104 - an address to refuse, nothing binds it


def mapped(names: dict[str, list[str]]):
    """A resolver that knows only ``names`` (the test's own DNS)."""

    def resolver(host: str, port: int) -> list[str]:
        if host not in names:
            raise OSError(f"unknown host {host}")
        return names[host]

    return resolver


def test_loopback_is_refused_without_being_listed_then_accepted_once_it_is(serve):
    server = serve()
    with pytest.raises(OutboundRefused, match="not a public address"):
        post_json(f"{server.url}/v1", {}, policy=NOTHING_ALLOWED, timeout=5)
    assert server.received == []
    for allowed in (["127.0.0.1"], ["127.0.0.0/8"], ["localhost"]):
        policy = OutboundPolicy.configured(allowed, resolver=mapped({"localhost": ["127.0.0.1"]}))
        host = "localhost" if allowed == ["localhost"] else "127.0.0.1"
        answer = post_json(f"http://{host}:{server.port}/v1", {}, policy=policy, timeout=5)
        assert answer.ok and answer.body == COMPLETION
    assert len(server.received) == 3


@pytest.mark.parametrize(
    "addresses",
    [["10.1.2.3"], ["192.168.0.7"], ["169.254.169.254"], ["fd00::1"], [UNSPECIFIED], ["93.184.216.34", "127.0.0.1"]],
)
def test_a_name_that_resolves_to_an_internal_address_is_refused(addresses):
    policy = OutboundPolicy.configured([], resolver=mapped({"models.example.test": addresses}))
    with pytest.raises(OutboundRefused, match="models.example.test"):
        policy.check_url("https://models.example.test/v1")


def test_addresses_spelled_otherwise_are_judged_by_what_they_reach():
    for url in ("http://[::ffff:127.0.0.1]/", "http://[::1]:8000/", "http://127.0.0.2/", f"http://{UNSPECIFIED}/"):
        with pytest.raises(OutboundRefused):
            NOTHING_ALLOWED.check_url(url)
    NOTHING_ALLOWED.check_url("https://93.184.216.34/v1")


def test_the_connection_goes_to_the_checked_address_and_still_names_the_host(serve):
    server = serve()
    policy = OutboundPolicy.configured(["127.0.0.1"], resolver=mapped({"models.example.test": ["127.0.0.1"]}))
    answer = post_json(f"http://models.example.test:{server.port}/v1/chat", {}, policy=policy, timeout=5)
    assert answer.ok
    assert server.received == [{"path": "/v1/chat", "host": f"models.example.test:{server.port}"}]


def test_a_name_that_resolves_elsewhere_after_its_check_is_refused_when_called(serve):
    server = serve()
    names = {"rebind.example.test": ["93.184.216.34"]}
    policy = OutboundPolicy.configured([], resolver=mapped(names))
    policy.check_url(f"http://rebind.example.test:{server.port}/v1")  # public when registered
    names["rebind.example.test"] = ["127.0.0.1"]
    with pytest.raises(OutboundRefused, match=r"rebind.example.test:\d+ \(127.0.0.1\) is not a public address"):
        post_json(f"http://rebind.example.test:{server.port}/v1", {}, policy=policy, timeout=5)
    assert server.received == []


def test_a_services_port_is_refused_even_where_loopback_is_allowed(serve):
    own, other = serve(), serve()
    policy = OutboundPolicy.configured(
        ["127.0.0.0/8", "::1"], services=[("127.0.0.1", own.port)], resolver=mapped({"localhost": ["127.0.0.1"]})
    )
    for host in ("127.0.0.1", "localhost", "127.0.0.2", "[::1]", UNSPECIFIED, "[::ffff:127.0.0.1]"):
        with pytest.raises(OutboundRefused, match="one of this server's own services"):
            post_json(f"http://{host}:{own.port}/v1", {}, policy=policy, timeout=5)
    assert own.received == []
    assert post_json(f"{other.url}/v1", {}, policy=policy, timeout=5).ok


def test_a_service_named_by_host_is_refused_on_the_addresses_that_name_has():
    policy = OutboundPolicy.configured(
        ["10.0.0.0/8"], services=[("redis", 6379)], resolver=mapped({"redis": ["10.0.0.5"]})
    )
    with pytest.raises(OutboundRefused, match="own services"):
        policy.check_url("http://10.0.0.5:6379/")
    policy.check_url("http://10.0.0.6:6379/")
    policy.check_url("http://10.0.0.5:8000/")


def test_a_redirect_to_a_refused_address_is_not_followed(serve):
    own = serve()
    hop = serve(status=307, body=b"", headers={"Location": f"http://127.0.0.1:{own.port}/v1"})
    policy = OutboundPolicy.configured(["127.0.0.1"], services=[("127.0.0.1", own.port)])
    answer = post_json(f"{hop.url}/v1", {}, policy=policy, timeout=5)
    assert answer.status == 307
    # A client that does follow redirects checks each hop's connection all the same.
    with guarded_client(policy, timeout=5, follow_redirects=True) as client, pytest.raises(OutboundRefused):
        client.post(f"{hop.url}/v1", json={})
    assert len(hop.received) == 2 and own.received == []


def test_an_endpoint_member_is_checked_before_it_is_called_and_on_every_call(serve):
    server = serve()
    config = {"base_url": f"{server.url}/v1", "model": "m", "max_retries": 0}
    refused = make_backend("openai", config, options=BackendOptions(outbound=NOTHING_ALLOWED))
    with pytest.raises(BackendError, match=rf"base_url {server.url}/v1 is refused"):
        refused.check()
    with pytest.raises(BackendError, match="is refused"):
        refused.generate(["2+2?"], DecodingParams())
    assert server.received == []
    allowed = make_backend("openai", config, options=BackendOptions(outbound=OutboundPolicy.configured(["127.0.0.1"])))
    allowed.check()
    assert allowed.generate(["2+2?"], DecodingParams())[0].text == "4"


def test_a_huge_hostile_error_body_becomes_a_short_printable_snippet(serve):
    body = b"\x00\x1b[31mno such model\r\n\x07\xe2\x80\xae<script>" + b"A" * (5 * 1024 * 1024)
    server = serve(status=400, body=body)
    backend = make_backend("openai", {"base_url": f"{server.url}/v1", "model": "m", "max_retries": 0})
    with pytest.raises(BackendError) as info:
        backend.generate(["hi"], DecodingParams())
    message = str(info.value)
    assert "HTTP 400" in message and "no such model" in message
    assert len(message) < 400 and message.isprintable()
    assert "\u202e" not in message and "\x1b" not in message


def test_a_redirecting_endpoint_member_says_redirects_are_not_followed(serve):
    hop = serve(status=308, body=b"moved", headers={"Location": "http://10.0.0.1/v1"})
    backend = make_backend("openai", {"base_url": f"{hop.url}/v1", "model": "m", "max_retries": 0})
    with pytest.raises(BackendError, match="HTTP 308 moved .redirects are not followed"):
        backend.generate(["hi"], DecodingParams())


def test_snippets_keep_printable_text_and_cut_it_short():
    assert snippet(b"  a\x00b\n\tc  ") == "a b c"
    assert snippet("x" * 500, limit=10) == "x" * 9 + "…"
    assert snippet(b"\xff\xfeok") == "\ufffd\ufffdok"


def test_allow_lists_take_networks_addresses_and_host_names_and_nothing_else():
    networks, hosts = parse_allowed(["10.0.0.0/8", " 192.168.1.5 ", "[::1]", "GPU-1.lab.", ""])
    assert [str(n) for n in networks] == ["10.0.0.0/8", "192.168.1.5/32", "::1/128"]
    assert hosts == {"gpu-1.lab"}
    for bad in ("http://x", "a b", "10.0.0.0/33", "x/y"):
        with pytest.raises(ValueError, match="neither a host name nor"):
            parse_allowed([bad])
