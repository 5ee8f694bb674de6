"""CSRF: a state-changing request needs ``X-Baton-Request: 1`` and, from a
browser, this site's own origin (app/csrf.py) — on a real gunicorn site,
against real Redis, and with a real headless Chromium for the attack and for
the dashboard's own button."""

import json
import re
import threading
import time
import urllib.error
import urllib.request
from base64 import b64encode
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from election import read_lease
from tests.conftest import wait_until
from tests.support.cdp import open_dashboard
from tests.support.lease import leads_ready

FOREIGN = "http://evil.example"


def lease_of(r, prefix):
    record = read_lease(r, prefix)
    return (record.holder, record.token) if record else None


def lone_leader(web, shared_redis, prefix):
    """One site, alone, so it leads (within a second or two)."""
    r = shared_redis.client()
    a = web("a", shared_redis.url, prefix)
    wait_until(lambda: leads_ready(r, prefix, "a"), timeout=15, what="a to lead")
    return r, a


def request(site, path, method="GET", headers=None, auth=True):
    """(status, headers, body) of one request to ``site``, headers as given
    (``WebSite.get`` adds X-Baton-Request by itself; this adds nothing)."""
    req = urllib.request.Request(f"http://127.0.0.1:{site.port}{path}", method=method, headers=dict(headers or {}))
    if auth:
        req.add_header("Authorization", "Basic " + b64encode(":".join(site.auth).encode()).decode())
    try:
        with urllib.request.urlopen(req, timeout=15) as response:
            return response.status, response.headers, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read().decode()


def error_of(body):
    data = json.loads(body)
    assert list(data) == ["error"] and "\n" not in data["error"], data
    return data["error"]


def test_release_needs_the_header_and_this_sites_own_origin(web, shared_redis, prefix):
    r, a = lone_leader(web, shared_redis, prefix)
    before = lease_of(r, prefix)
    own = f"http://127.0.0.1:{a.port}"

    # Valid credentials, no header: refused, and the message says what to send.
    status, body = a.get("/lease/release", method="POST", csrf_header=False)
    assert status == 403
    assert f"-H 'X-Baton-Request: 1' -u USER:PASSWORD {own}/lease/release" in error_of(body)
    # The same 403 whatever the credentials: a refused request learns nothing about them.
    assert a.get("/lease/release", method="POST", csrf_header=False, auth=("op", "wrong")) == (status, body)
    assert a.get("/lease/release", method="POST", csrf_header=False, auth=None) == (status, body)

    refused = [
        {"Origin": FOREIGN},
        {"Origin": "null"},
        {"Origin": f"http://127.0.0.1:{a.port + 1}"},  # another port is another origin
        {"Origin": f"https://127.0.0.1:{a.port}"},  # https with no X-Forwarded-Proto saying so
        {"Origin": own, "Sec-Fetch-Site": "cross-site"},
        {"Origin": own, "Sec-Fetch-Site": "same-site"},
    ]
    for headers in refused:
        status, body = a.get("/lease/release", method="POST", headers=headers)
        assert status == 403, (headers, body)
        if "Origin" in headers and headers["Origin"] != own:
            assert f"Origin {headers['Origin']}" in error_of(body)
        else:
            assert "Sec-Fetch-Site" in error_of(body)

    time.sleep(1.5)  # several renewals (0.2 s): a step-down request would have been honoured by now
    assert lease_of(r, prefix) == before, "a refused request released the lease"
    assert a.count("event=csrf_refused") == 3 + len(refused)
    assert a.has("event=csrf_refused site=a method=POST path=/lease/release")
    assert not any("s3cret-pass" in line for line in a.lines)

    # The header and this site's own origin, as the dashboard sends them: released.
    status, body = a.get("/lease/release", method="POST", headers={"Origin": own, "Sec-Fetch-Site": "same-origin"})
    assert status == 200, body
    assert json.loads(body)["released"] is True
    assert lease_of(r, prefix) != before


def test_the_rule_for_every_method_and_origin(web, shared_redis, prefix):
    """On POST /healthz, which has no POST: 405 means the request got past the
    CSRF check (it runs before routing), 403 that the check refused it."""
    a = web("a", shared_redis.url, prefix)
    wait_until(a.bound, timeout=10, what="the port")
    mine = f"127.0.0.1:{a.port}"
    hdr = {"X-Baton-Request": "1"}
    cases = [
        # (method, headers, expected status)
        ("POST", {}, 403),
        ("POST", {"X-Baton-Request": "yes"}, 403),
        ("POST", hdr, 405),  # curl or a script: no Origin, no Sec-Fetch-*
        ("PUT", {}, 403), ("PATCH", {}, 403), ("DELETE", {}, 403), ("PROPFIND", {}, 403),
        ("PUT", hdr, 405), ("PATCH", hdr, 405), ("DELETE", hdr, 405),
        ("POST", {**hdr, "Origin": f"http://{mine}"}, 405),
        ("POST", {**hdr, "Origin": f"HTTP://{mine.upper()}"}, 405),
        ("POST", {**hdr, "Origin": f"http://localhost:{a.port}"}, 403),  # Host is 127.0.0.1
        ("POST", {**hdr, "Origin": FOREIGN}, 403),
        ("POST", {**hdr, "Origin": "null"}, 403),
        ("POST", {**hdr, "Origin": "not a url"}, 403),
        ("POST", {**hdr, "Origin": f"http://evil.example@{mine}"}, 403),  # an Origin has no user part
        ("POST", {**hdr, "Origin": f"http://{mine}/lease"}, 403),  # nor a path
        ("POST", {**hdr, "Origin": f"http://{mine}", "Sec-Fetch-Site": "same-origin"}, 405),
        ("POST", {**hdr, "Sec-Fetch-Site": "none"}, 405),  # typed or bookmarked
        ("POST", {**hdr, "Sec-Fetch-Site": "same-site"}, 403),
        ("POST", {**hdr, "Sec-Fetch-Site": "cross-site"}, 403),
        # TLS ended by a proxy in front of gunicorn: the scheme differs, the port must not.
        ("POST", {**hdr, "Origin": f"https://{mine}"}, 403),
        ("POST", {**hdr, "Origin": f"https://{mine}", "X-Forwarded-Proto": "https"}, 405),
        ("POST", {**hdr, "Origin": f"http://{mine}", "X-Forwarded-Proto": "https"}, 403),
        # Heroku: Host is the app's name, no port; the router sets X-Forwarded-Proto.
        ("POST", {**hdr, "Host": "baton.example", "Origin": "https://baton.example", "X-Forwarded-Proto": "https"}, 405),
        ("POST", {**hdr, "Host": "baton.example", "Origin": "https://baton.example:8443",
                  "X-Forwarded-Proto": "https"}, 403),
        ("POST", {**hdr, "Host": "baton.example", "Origin": "https://evil.baton.example",
                  "X-Forwarded-Proto": "https"}, 403),
        ("POST", {**hdr, "Host": "baton.example", "Origin": "https://baton.example"}, 403),
        ("POST", {**hdr, "Host": "baton.example", "Origin": "http://baton.example"}, 405),
        # GET (and HEAD, OPTIONS) are never blocked, whatever they carry.
        ("GET", {"Origin": FOREIGN, "Sec-Fetch-Site": "cross-site"}, 200),
        ("HEAD", {"Origin": "null"}, 200),
    ]
    for method, headers, expected in cases:
        status, _, body = request(a, "/healthz", method, headers)
        assert status == expected, (method, headers, status, body)
        if expected == 403:
            assert error_of(body).startswith(f"{method} refused: ")
    # A route that does not exist: the check still comes first.
    assert request(a, "/no/such/route", "POST")[0] == 403


def test_every_route_refuses_cross_site_writes_and_grants_no_cors_preflight(web, shared_redis, prefix):
    """Every route of the app, including those added after this test: each
    state-changing method is refused without the header or from a foreign
    origin (refused requests change nothing, so trying them all is safe), and
    no preflight is granted — a cross-origin fetch that sets X-Baton-Request
    needs one."""
    from app import create_app
    from app.settings import WebSettings

    a = web("a", shared_redis.url, prefix)
    wait_until(a.bound, timeout=10, what="the port")
    rules = list(create_app(WebSettings.from_env(a.env)).url_map.iter_rules())
    assert any(rule.rule == "/lease/release" for rule in rules)
    for rule in rules:
        path = re.sub(r"<[^>]+>", "x", rule.rule)  # /entries/<name>/pause -> /entries/x/pause
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            if method not in ("GET", "TRACE"):
                for headers in ({}, {"X-Baton-Request": "1", "Origin": FOREIGN},
                                {"X-Baton-Request": "1", "Sec-Fetch-Site": "cross-site"}):
                    status, _, body = request(a, path, method, headers)
                    assert status == 403 and error_of(body).startswith(f"{method} refused"), (path, method, headers)
            status, headers, _ = request(a, path, "OPTIONS", {
                "Origin": FOREIGN, "Access-Control-Request-Method": method,
                "Access-Control-Request-Headers": "x-baton-request"})
            granted = [h for h in headers if h.lower().startswith("access-control-")]
            assert not granted, (path, method, status, granted)


class AttackerSite:
    """The attacker's page on another origin (127.0.0.2, another site than
    127.0.0.1 to the browser): a form that posts itself to the Baton site."""

    def __init__(self, target_port):
        page = (
            "<!doctype html><title>cute cats</title>"
            f'<form method="post" action="http://127.0.0.1:{target_port}/lease/release">'
            '<input type="hidden" name="flap" value="1"></form>'
            "<script>document.forms[0].submit()</script>"
        ).encode()
        self.hits = []

        class Handler(BaseHTTPRequestHandler):
            def do_GET(handler):
                self.hits.append(handler.path)
                handler.send_response(200)
                handler.send_header("Content-Type", "text/html; charset=utf-8")
                handler.send_header("Content-Length", str(len(page)))
                handler.end_headers()
                handler.wfile.write(page)

            def log_message(handler, *args):
                pass

        # Threads, so that a connection the browser opens ahead and leaves
        # idle blocks neither another request nor shutdown().
        self.server = ThreadingHTTPServer(("127.0.0.2", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.2:{self.server.server_port}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def exchange(page, path, method="POST"):
    """(request headers as sent on the wire, response) of the last ``method``
    ``path`` request the page made, once its response has come."""
    def sent(params):
        return params["request"]["method"] == method and params["request"]["url"].endswith(path)

    ident = page.wait_event("Network.requestWillBeSent", sent)["requestId"]
    response = page.wait_event("Network.responseReceived", lambda p: p["requestId"] == ident)["response"]
    wire = page.wait_event("Network.requestWillBeSentExtraInfo", lambda p: p["requestId"] == ident)["headers"]
    return {k.lower(): v for k, v in wire.items()}, response


def test_a_cross_site_form_in_a_logged_in_browser_cannot_release(web, shared_redis, prefix, browser):
    r, a = lone_leader(web, shared_redis, prefix)
    attacker = AttackerSite(a.port)
    try:
        page = browser.page()
        # The operator has the dashboard open (or had): the browser holds
        # Baton's Basic credentials for 127.0.0.1:<port>. Then, in the same
        # browser, a page of another site posts its form to Baton. Without the
        # CSRF check this is an authenticated release, as the request's
        # Authorization header below shows; with it, a 403.
        open_dashboard(page, a)
        before = lease_of(r, prefix)
        page.navigate(attacker.url)
        sent, response = exchange(page, "/lease/release")
        assert attacker.hits == ["/"]
        assert sent["authorization"].startswith("Basic "), "the browser did not resend the credentials"
        assert sent["origin"] == attacker.url.rstrip("/")
        assert sent.get("sec-fetch-site") == "cross-site"
        assert "x-baton-request" not in sent
        assert response["status"] == 403
        page.wait_event("Page.loadEventFired", timeout=10)
        shown = page.wait_for("document.body ? document.body.innerText : ''", lambda t: "refused" in t)
        assert "Origin http://127.0.0.2" in shown
        wait_until(lambda: a.has("event=csrf_refused site=a method=POST path=/lease/release"), timeout=5,
                   what="the refusal in the site's log")
        time.sleep(1.5)  # several renewals: a step-down request would have been honoured by now
        assert lease_of(r, prefix) == before, "the cross-site form released the lease"
    finally:
        attacker.close()


def test_the_dashboards_release_button_still_works(web, shared_redis, prefix, browser):
    r, a = lone_leader(web, shared_redis, prefix)
    page = browser.page()
    open_dashboard(page, a)
    page.wait_for('document.getElementById("my-role").textContent', lambda v: v == "leader")
    before = lease_of(r, prefix)
    # The operator's click, on the real button of the real page.
    page.evaluate('document.getElementById("release").click()')
    sent, response = exchange(page, "/lease/release")
    assert sent["x-baton-request"] == "1"
    assert sent["origin"] == f"http://127.0.0.1:{a.port}"
    assert sent.get("sec-fetch-site") == "same-origin"
    assert sent["authorization"].startswith("Basic ")
    assert response["status"] == 200
    result = page.wait_for('document.getElementById("release-result").textContent',
                           lambda t: t.startswith(("released", "not released")), timeout=15)
    assert result.startswith("released"), result
    assert lease_of(r, prefix) != before  # the term the click ended is over
    assert not a.has("event=csrf_refused")
