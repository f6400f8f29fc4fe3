"""A web page the user visits cannot use the server: not cross-site (Origin, Sec-Fetch-Site, content
type), not through DNS rebinding (Host). The server's own page, editors and curl still can, and
--allow-host / --allow-origin (build_app's allow_hosts / allow_origins) open it to more."""

import httpx
import pytest
from fastapi.testclient import TestClient

from runner.serve.app import build_app

BODY = {"inputs": "def f():", "parameters": {"max_new_tokens": 2, "do_sample": False}}


def post(server, path="/models/x", *, headers=None, **kwargs) -> httpx.Response:
    return httpx.post(server.url + path, headers=headers, timeout=60, **kwargs)


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8080", "localhost.evil.example", "127.0.0.1.nip.io"])
def test_a_request_for_another_host_name_is_refused(server, host):
    for r in (httpx.get(server.url + "/info", headers={"host": host}), post(server, json=BODY, headers={"host": host})):
        assert r.status_code == 400, r.text
        assert "is not this server's" in r.json()["error"] and "--allow-host" in r.json()["error"]


@pytest.mark.parametrize("host", ["localhost", "LOCALHOST:1234", "127.0.0.1", "[::1]:80", "10.1.2.3:8080"])
def test_loopback_names_and_addresses_are_answered(server, host):
    assert httpx.get(server.url + "/info", headers={"host": host}).status_code == 200


def test_cross_origin_posts_are_refused_same_origin_ones_answered(server):
    own = server.url
    r = post(server, json=BODY, headers={"origin": "https://evil.example"})
    assert r.status_code == 403 and "cross-origin" in r.json()["error"] and "--allow-origin" in r.json()["error"]
    assert post(server, json=BODY, headers={"origin": "null"}).status_code == 403
    r = post(server, json=BODY, headers={"sec-fetch-site": "cross-site"})
    assert r.status_code == 403
    r = post(server, "/v1/solve", json={"question": "Add.", "max_new_tokens": 2},
             headers={"origin": own, "sec-fetch-site": "same-origin"})
    assert r.status_code == 200, r.text  # what the page at / sends


def test_a_browser_must_send_json_an_editor_may_send_text_plain(server):
    text = httpx.Request("POST", "/", json=BODY).content
    plain = {"content-type": "text/plain;charset=UTF-8"}
    # a cross-site <form enctype="text/plain"> or fetch(no-cors) from the server's own origin: refused
    r = post(server, content=text, headers={**plain, "origin": server.url})
    assert r.status_code == 415 and "application/json" in r.json()["error"]
    for kind in ("application/x-www-form-urlencoded", "multipart/form-data; boundary=x"):
        assert post(server, content=text, headers={"content-type": kind}).status_code == 415
    # node-fetch in the Code Clippy extension: text/plain, no Origin
    assert post(server, content=text, headers=plain).status_code == 200


def test_allowed_hosts_and_origins(server):
    app = build_app(server.served, server.batcher, allow_hosts=["testserver", "code.internal"],
                    allow_origins=["https://tool.example"])
    client = TestClient(app)  # no lifespan: the batcher stays the fixture's
    assert client.get("/info").status_code == 200
    assert client.get("/info", headers={"host": "code.internal:8080"}).status_code == 200
    assert client.get("/info", headers={"host": "other.internal"}).status_code == 400
    # an invalid body gets 422: it passed the guard
    assert client.post("/v1/completions", json={}, headers={"origin": "https://tool.example"}).status_code == 422
    assert client.post("/v1/completions", json={}, headers={"origin": "https://other.example"}).status_code == 403
    # the allowed origin may read answers (CORS), including after a preflight
    r = client.options("/v1/completions", headers={"origin": "https://tool.example",
                                                   "access-control-request-method": "POST",
                                                   "access-control-request-headers": "content-type"})
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "https://tool.example"
    anyone = TestClient(build_app(server.served, server.batcher, allow_hosts=["*"], allow_origins=["*"]))
    assert anyone.get("/info", headers={"host": "whatever.example"}).status_code == 200
    assert anyone.post("/v1/completions", json={}, headers={"origin": "https://x.example"}).status_code == 422
