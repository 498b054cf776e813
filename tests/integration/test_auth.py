#!/usr/bin/env python3
"""Authentication and authorisation, end to end (DESIGN.md §1.3-§1.8, error format)."""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

IDENTITY_NAMES = {"x-keygate-key-id", "x-keygate-scopes", "x-keygate-label-tenant",
                  "x-keygate-label-region"}


class AuthTest(h.KeygateTestCase):
    """One keygate with keys in every state, accept_bearer on, rules and public paths."""

    @classmethod
    def setUpClass(cls):
        cls.up = cls.start_upstream()
        names = ["alpha", "reader", "tenant", "expired", "future", "disabled", "hashed"]
        cls.keys = {n: h.new_key() for n in names}
        cls.wrong_keys = []  # every made-up key sent, checked against the logs at the end
        k = cls.keys
        cfg = h.make_config(cls.up.port, keys=[
            h.key_entry("alpha", key=k["alpha"], scopes=["orders:read", "orders:write"],
                        labels={"tenant": "acme", "region": "eu-west"}),
            h.key_entry("reader", key=k["reader"], scopes=["orders:read"]),
            h.key_entry("tenant", key=k["tenant"], allowed_paths=["/tenants/acme/*"]),
            h.key_entry("expired", key=k["expired"], expires_at="2020-01-01T00:00:00Z"),
            h.key_entry("future", key=k["future"], not_before="2099-01-01T00:00:00Z"),
            h.key_entry("disabled", key=k["disabled"], disabled=True),
            h.key_entry("hashed", hash=h.key_hash(k["hashed"]), scopes=["admin"]),
        ], auth={
            "accept_bearer": True,
            "public_paths": ["/healthz", "/public/*"],
            "rules": [
                {"path": "/admin/*", "methods": ["POST", "DELETE"], "scopes": ["admin"]},
                {"path": "/orders/*", "methods": ["POST"], "scopes": ["orders:write"]},
                {"path": "/reports/*", "methods": ["GET"], "scopes": ["reports"]},
            ]})
        cls.kg = cls.start_keygate(cfg)

    def setUp(self):
        self.up.reset()

    def tearDown(self):
        self.assertUpstreamClean()

    def wrong_key(self) -> str:
        key = h.new_key()
        self.wrong_keys.append(key)
        return key

    def key_hdr(self, name: str):
        return ("X-API-Key", self.keys[name])

    def assertDenied401(self, resp, code):
        self.assertError(resp, 401, code)
        self.assertEqual(resp.header_all("WWW-Authenticate"), [h.WWW_AUTHENTICATE])

    # ----------------------------------------------------------------- allowed

    def test_valid_key_forwarded_with_identity_headers(self):
        rid = h.unique_id()
        r = self.req("GET", "/orders/1?x=1&y=2", [self.key_hdr("alpha"), ("X-Request-Id", rid)])
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.header_all("X-Request-Id"), [rid])
        reqs = self.up.wait_requests(1)
        self.assertEqual(len(reqs), 1)
        u = reqs[0]
        self.assertEqual(u.method, "GET")
        self.assertEqual(u.target, "/orders/1?x=1&y=2")
        self.assertEqual(u.header_all("X-Keygate-Key-Id"), ["alpha"])
        self.assertEqual(u.header_all("X-Keygate-Scopes"), ["orders:read,orders:write"])
        self.assertEqual(u.header_all("X-Keygate-Label-tenant"), ["acme"])
        self.assertEqual(u.header_all("X-Keygate-Label-region"), ["eu-west"])
        self.assertEqual({n.lower() for n in u.names_with_prefix("X-Keygate-")}, IDENTITY_NAMES)
        self.assertFalse(u.has("X-API-Key"), u.headers)
        self.assertNotIn(self.keys["alpha"].encode(), self.up.raw_bytes())
        log = self.kg.find_log(rid)
        self.assertIsNotNone(log, "no access-log line for the request")
        self.assertEqual(log.get("status"), 200)
        self.assertEqual(log.get("outcome"), "allowed")
        self.assertEqual(log.get("key_id"), "alpha")
        self.assertEqual(log.get("method"), "GET")
        self.assertEqual(log.get("path"), "/orders/1")

    def test_credential_header_name_is_case_insensitive(self):
        r = self.req("GET", "/orders/2", [("x-api-KEY", self.keys["reader"])])
        self.assertEqual(r.status, 200, r)
        u = self.up.wait_requests(1)[0]
        self.assertEqual(u.header_all("X-Keygate-Key-Id"), ["reader"])
        self.assertEqual(u.header_all("X-Keygate-Scopes"), ["orders:read"])
        self.assertFalse(u.has("X-API-Key"))

    def test_key_given_by_hash(self):
        r = self.req("GET", "/x", [self.key_hdr("hashed")])
        self.assertEqual(r.status, 200, r)
        u = self.up.wait_requests(1)[0]
        self.assertEqual(u.header_all("X-Keygate-Key-Id"), ["hashed"])
        self.assertEqual(u.header_all("X-Keygate-Scopes"), ["admin"])

    def test_key_without_scopes_or_labels_gets_only_key_id(self):
        r = self.req("GET", "/tenants/acme/a", [self.key_hdr("tenant")])
        self.assertEqual(r.status, 200, r)
        u = self.up.wait_requests(1)[0]
        self.assertEqual([n.lower() for n in u.names_with_prefix("X-Keygate-")], ["x-keygate-key-id"])
        self.assertEqual(u.header("X-Keygate-Key-Id"), "tenant")

    def test_bearer_accepted_and_stripped(self):
        for scheme in ("Bearer", "bearer", "BEARER"):
            self.up.reset()
            r = self.req("GET", "/orders/3", [("Authorization", f"{scheme} {self.keys['alpha']}")])
            self.assertEqual(r.status, 200, f"{scheme}: {r!r}")
            u = self.up.wait_requests(1)[0]
            self.assertEqual(u.header_all("X-Keygate-Key-Id"), ["alpha"])
            self.assertFalse(u.has("Authorization"), u.headers)
            self.assertNotIn(self.keys["alpha"].encode(), self.up.raw_bytes())

    def test_basic_authorization_passes_through(self):
        r = self.req("GET", "/orders/4", [self.key_hdr("alpha"), ("Authorization", "Basic dXNlcjpwYXNz")])
        self.assertEqual(r.status, 200, r)
        u = self.up.wait_requests(1)[0]
        self.assertEqual(u.header_all("Authorization"), ["Basic dXNlcjpwYXNz"])
        self.assertEqual(u.header_all("X-Keygate-Key-Id"), ["alpha"])
        # Basic is not a credential for keygate.
        self.up.reset()
        r = self.req("GET", "/orders/4", [("Authorization", "Basic dXNlcjpwYXNz")])
        self.assertDenied401(r, "missing_api_key")
        self.assertNothingForwarded()

    # ----------------------------------------------------------------- 401

    def test_missing_key(self):
        cases = [
            [],
            [("X-API-Key", "")],
            [("Authorization", "Bearer")],
            [("Authorization", "Bearer ")],
            [("X-Other", self.keys["alpha"])],
        ]
        for headers in cases:
            rid = h.unique_id()
            r = self.req("GET", "/orders/1", headers + [("X-Request-Id", rid)])
            self.assertDenied401(r, "missing_api_key")
            self.assertFalse(r.has_close(), "a denial without body must keep the connection")
            self.assertEqual(r.header_all("X-Request-Id"), [rid])
            log = self.kg.find_log(rid)
            self.assertIsNotNone(log, f"no access-log line for {headers!r}")
            self.assertEqual(log.get("status"), 401)
            self.assertEqual(log.get("outcome"), "denied")
            self.assertEqual(log.get("reason"), "missing")
        self.assertNothingForwarded()

    def test_invalid_keys_are_indistinguishable(self):
        cases = [("unknown", self.wrong_key()), ("expired", self.keys["expired"]),
                 ("not_yet_valid", self.keys["future"]), ("disabled", self.keys["disabled"]),
                 ("unknown", self.keys["alpha"].swapcase()), ("unknown", self.keys["alpha"] + "x"),
                 ("unknown", self.keys["alpha"][:-1])]
        raws = []
        for reason, key in cases:
            rid = h.unique_id()
            r = self.req("GET", "/orders/1", [("X-API-Key", key), ("X-Request-Id", rid)])
            self.assertDenied401(r, "invalid_api_key")
            raws.append((reason, h.strip_volatile(r.raw)))
            log = self.kg.find_log(rid)
            self.assertIsNotNone(log, f"no access-log line for {reason}")
            self.assertEqual(log.get("outcome"), "denied")
            self.assertEqual(log.get("status"), 401)
            self.assertEqual(log.get("reason"), reason)
        for reason, raw in raws[1:]:
            self.assertEqual(raw, raws[0][1], f"the {reason} denial differs from the unknown-key one")
        self.assertNothingForwarded()

    def test_invalid_bearer(self):
        r = self.req("GET", "/orders/1", [("Authorization", "Bearer " + self.wrong_key())])
        self.assertDenied401(r, "invalid_api_key")
        self.assertNothingForwarded()

    def test_duplicate_credentials(self):
        a = self.keys["alpha"]
        cases = [
            [("X-API-Key", a), ("X-API-Key", a)],
            [("X-API-Key", a), ("x-api-key", self.keys["reader"])],
            [("X-API-Key", a), ("Authorization", "Bearer " + a)],
            [("Authorization", "Bearer " + a), ("Authorization", "Bearer " + a)],
        ]
        for headers in cases:
            rid = h.unique_id()
            r = self.req("GET", "/orders/1", headers + [("X-Request-Id", rid)])
            self.assertDenied401(r, "invalid_api_key")
            log = self.kg.find_log(rid)
            self.assertIsNotNone(log)
            self.assertEqual(log.get("reason"), "duplicate", f"{headers!r}")
        self.assertNothingForwarded()

    def test_key_in_query_string_never_read(self):
        a = self.keys["alpha"]
        for q in (f"api_key={a}", f"X-API-Key={a}", f"x-api-key={a}", f"key={a}",
                  f"apikey={a}", f"access_token={a}"):
            r = self.req("GET", f"/orders/1?{q}")
            self.assertDenied401(r, "missing_api_key")
        self.assertNothingForwarded()

    def test_options_needs_a_key(self):
        r = self.req("OPTIONS", "/orders/1", [("Origin", "https://example.com"),
                                              ("Access-Control-Request-Method", "GET")])
        self.assertDenied401(r, "missing_api_key")
        self.assertNothingForwarded()

    # ----------------------------------------------------------------- public paths

    def test_public_path_without_key(self):
        for path in ("/healthz", "/public", "/public/a/b?q=1"):
            self.up.reset()
            rid = h.unique_id()
            r = self.req("GET", path, [("X-Request-Id", rid)])
            self.assertEqual(r.status, 200, f"{path}: {r!r}")
            u = self.up.wait_requests(1)[0]
            self.assertEqual(u.target, path)
            self.assertEqual(u.names_with_prefix("X-Keygate-"), [])
            log = self.kg.find_log(rid)
            self.assertIsNotNone(log)
            self.assertEqual(log.get("outcome"), "public")

    def test_public_path_strips_key_and_forged_identity(self):
        a = self.keys["alpha"]
        r = self.req("GET", "/healthz", [("X-API-Key", a), ("X-Keygate-Key-Id", "forged"),
                                         ("x-keygate-label-tenant", "evil"),
                                         ("X-KEYGATE-SCOPES", "admin")])
        self.assertEqual(r.status, 200, r)
        u = self.up.wait_requests(1)[0]
        self.assertFalse(u.has("X-API-Key"))
        self.assertEqual(u.names_with_prefix("X-Keygate-"), [], u.headers)
        self.assertNotIn(a.encode(), self.up.raw_bytes())
        self.assertNotIn(b"forged", self.up.raw_bytes())
        # A key that would be refused is not even looked at.
        self.up.reset()
        for key in (self.wrong_key(), self.keys["expired"]):
            r = self.req("GET", "/healthz", [("X-API-Key", key)])
            self.assertEqual(r.status, 200, r)
        self.assertEqual(len(self.up.wait_requests(2)), 2)
        for u in self.up.requests:
            self.assertFalse(u.has("X-API-Key"))

    def test_public_path_matching_is_exact(self):
        for path in ("/healthz/", "/healthzX", "/Healthz", "/publicX", "/healthz/../admin",
                     "/public/../orders"):
            r = self.req("GET", path)
            self.assertDenied401(r, "missing_api_key")
        self.assertNothingForwarded()

    # ----------------------------------------------------------------- 403

    def test_rules_require_scopes(self):
        a, rd, hk = self.keys["alpha"], self.keys["reader"], self.keys["hashed"]
        denied = [("POST", "/orders/1", rd), ("POST", "/orders", rd), ("POST", "/admin/users", a),
                  ("DELETE", "/admin", a), ("GET", "/reports/q", a),
                  ("POST", "/x/../admin/users", a), ("POST", "//admin//users", a),
                  ("POST", "/%61dmin/users", a)]
        for method, path, key in denied:
            rid = h.unique_id()
            r = self.req(method, path, [("X-API-Key", key), ("X-Request-Id", rid)])
            self.assertError(r, 403, "insufficient_scope", close=False)
            self.assertFalse(r.has("WWW-Authenticate"))
            log = self.kg.find_log(rid)
            self.assertIsNotNone(log)
            self.assertEqual(log.get("outcome"), "denied")
            self.assertEqual(log.get("reason"), "insufficient_scope", f"{method} {path}")
        self.assertNothingForwarded()
        allowed = [("GET", "/orders/1", rd), ("POST", "/orders/1", a), ("POST", "/admin/users", hk),
                   ("GET", "/admin/users", a), ("PUT", "/admin/users", a),
                   ("HEAD", "/reports/q", a), ("POST", "/adminX", a)]
        for method, path, key in allowed:
            r = self.req(method, path, [("X-API-Key", key)])
            self.assertEqual(r.status, 200, f"{method} {path}: {r!r}")
        self.assertEqual(len(self.up.wait_requests(len(allowed))), len(allowed))

    def test_allowed_paths(self):
        t = self.keys["tenant"]
        ok = ["/tenants/acme", "/tenants/acme/orders/1", "/tenants/x/../acme/y"]
        for path in ok:
            r = self.req("GET", path, [("X-API-Key", t)])
            self.assertEqual(r.status, 200, f"{path}: {r!r}")
        got = [u.target for u in self.up.wait_requests(3)]
        self.assertEqual(got, ["/tenants/acme", "/tenants/acme/orders/1", "/tenants/acme/y"])
        self.up.reset()
        for path in ("/tenants/acmeX", "/tenants/other/1", "/tenants/acme/../other", "/",
                     "/tenants"):
            rid = h.unique_id()
            r = self.req("GET", path, [("X-API-Key", t), ("X-Request-Id", rid)])
            self.assertError(r, 403, "insufficient_scope", close=False)
            log = self.kg.find_log(rid)
            self.assertIsNotNone(log)
            self.assertEqual(log.get("reason"), "path_not_allowed", path)
        self.assertNothingForwarded()

    # ----------------------------------------------------------------- connection handling

    def test_denial_without_body_keeps_connection(self):
        with h.Client(self.kg.port) as c:
            r = c.request("GET", "/orders/1")
            self.assertDenied401(r, "missing_api_key")
            self.assertFalse(r.has_close())
            r = c.request("GET", "/orders/1", [self.key_hdr("alpha")])
            self.assertEqual(r.status, 200, r)
            r = c.request("POST", "/orders/1", [self.key_hdr("reader")])
            self.assertError(r, 403, "insufficient_scope", close=False)
            r = c.request("GET", "/orders/2", [("X-API-Key", self.wrong_key())])
            self.assertDenied401(r, "invalid_api_key")
            self.assertFalse(r.has_close())
            r = c.request("GET", "/orders/2", [self.key_hdr("alpha")])
            self.assertEqual(r.status, 200, r)
        self.assertEqual([u.target for u in self.up.wait_requests(2)], ["/orders/1", "/orders/2"])

    def test_denial_of_head_request_has_no_body(self):
        with h.Client(self.kg.port) as c:
            r = c.request("HEAD", "/orders/1")
            self.assertEqual(r.status, 401, r)
            self.assertFalse(r.has_close())
            # A body after the HEAD answer would be read as the next response.
            try:
                r = c.request("GET", "/orders/1", [self.key_hdr("alpha")])
            except ValueError as e:
                self.fail(f"keygate sent a body with its answer to HEAD: {e}")
            self.assertEqual(r.status, 200, r)

    def test_zero_length_body_is_no_body(self):
        with h.Client(self.kg.port) as c:
            r = c.request("POST", "/orders/1", [("Content-Length", "0")])
            self.assertDenied401(r, "missing_api_key")
            self.assertFalse(r.has_close(), "Content-Length: 0 is a request without a body")
            r = c.request("POST", "/orders/1", [self.key_hdr("alpha"), ("Content-Length", "0")])
            self.assertEqual(r.status, 200, r)

    def test_key_value_whitespace_is_not_part_of_the_key(self):
        r = self.req("GET", "/orders/1", [("X-API-Key", " \t" + self.keys["alpha"] + " \t")])
        self.assertEqual(r.status, 200, r)

    def test_denial_with_body_closes_connection(self):
        cases = [
            ("POST", "/orders/1", [], b"hello"),
            ("POST", "/orders/1", [("X-API-Key", self.wrong_key())], b"hello"),
            ("POST", "/orders/1", [("Transfer-Encoding", "chunked")], h.chunked_body([b"hello"])),
            ("POST", "/orders/1", [self.key_hdr("reader")], b"x" * 1000),
        ]
        for method, path, headers, body in cases:
            with h.Client(self.kg.port) as c:
                c.send(h.build_request(method, path, headers, body)
                       + h.build_request("GET", "/orders/9", [self.key_hdr("alpha")]))
                r = c.read_response()
                self.assertIn(r.status, (401, 403), r)
                self.assertTrue(r.has_close(), f"denial with a body needs Connection: close: {r!r}")
                self.assertClosed(c)
        self.assertNothingForwarded()

    # ----------------------------------------------------------------- logs

    def test_zz_keys_never_logged(self):
        a = self.keys["alpha"]
        self.req("GET", "/orders/1", [("X-API-Key", a)])
        self.req("GET", "/orders/1", [("Authorization", "Bearer " + a)])
        self.req("GET", f"/orders/1?api_key={a}")
        self.req("GET", "/healthz", [("X-API-Key", a)])
        self.req("POST", "/admin/x", [("X-API-Key", a)])
        for name in ("expired", "future", "disabled", "tenant"):
            self.req("GET", "/orders/1", [("X-API-Key", self.keys[name])])
        self.req("GET", "/orders/1", [("X-API-Key", self.wrong_key())])
        time.sleep(0.3)
        out, err = self.kg.stdout(), self.kg.stderr()
        self.assertTrue(out.strip(), "no access log at all on stdout")
        for key in list(self.keys.values()) + self.wrong_keys:
            self.assertNotIn(key, out, "a key appears in the access log")
            self.assertNotIn(key, err, "a key appears on stderr")
        # Every stdout line is one JSON access-log entry with the documented fields.
        fields = {"ts", "request_id", "client", "method", "path", "status", "outcome", "reason",
                  "key_id", "upstream_ms", "bytes_in", "bytes_out", "duration_ms"}
        entries = self.kg.access_log()
        self.assertEqual(len(entries), len([l for l in out.splitlines() if l.strip()]),
                         "stdout holds lines that are not JSON access-log entries")
        for e in entries:
            self.assertTrue(fields <= set(e), f"access-log entry lacks {fields - set(e)}: {e!r}")
            self.assertNotIn("?", str(e.get("path")), "the logged path must not carry the query")


class HideDenialsTest(h.KeygateTestCase):
    """auth.hide_denials: every 401 and 403 is one identical 404."""

    @classmethod
    def setUpClass(cls):
        cls.up = cls.start_upstream()
        cls.key = h.new_key()
        cls.kg = cls.start_keygate(h.make_config(cls.up.port, keys=[
            h.key_entry("alpha", key=cls.key, scopes=["orders:read"], allowed_paths=["/orders/*", "/admin/*"]),
        ], auth={"hide_denials": True,
                 "rules": [{"path": "/admin/*", "scopes": ["admin"]}]}))

    def setUp(self):
        self.up.reset()

    def test_denials_become_identical_404(self):
        cases = [("missing", []), ("unknown", [("X-API-Key", h.new_key())]),
                 ("duplicate", [("X-API-Key", self.key), ("X-API-Key", self.key)]),
                 ("insufficient_scope", [("X-API-Key", self.key)]),
                 ("path_not_allowed", [("X-API-Key", self.key)])]
        paths = {"insufficient_scope": "/admin/x", "path_not_allowed": "/other"}
        raws = []
        for reason, headers in cases:
            rid = h.unique_id()
            r = self.req("GET", paths.get(reason, "/orders/1"), headers + [("X-Request-Id", rid)])
            self.assertError(r, 404, "not_found", close=False)
            self.assertFalse(r.has("WWW-Authenticate"), r.headers)
            raws.append((reason, h.strip_volatile(r.raw)))
            log = self.kg.find_log(rid)
            self.assertIsNotNone(log)
            self.assertEqual(log.get("status"), 404)
            self.assertEqual(log.get("reason"), reason)
        for reason, raw in raws[1:]:
            self.assertEqual(raw, raws[0][1], f"{reason} denial differs")
        self.assertNothingForwarded()

    def test_valid_key_still_allowed(self):
        r = self.req("GET", "/orders/1", [("X-API-Key", self.key)])
        self.assertEqual(r.status, 200, r)
        self.assertEqual(self.up.wait_requests(1)[0].header("X-Keygate-Key-Id"), "alpha")


class CustomHeaderTest(h.KeygateTestCase):
    """A custom credential header, accept_bearer off, strip_credentials off."""

    @classmethod
    def setUpClass(cls):
        cls.up = cls.start_upstream()
        cls.key = h.new_key()
        cls.kg = cls.start_keygate(h.make_config(cls.up.port, keys=[
            h.key_entry("svc", key=cls.key)],
            auth={"header": "X-Service-Token", "accept_bearer": False, "strip_credentials": False}))

    def setUp(self):
        self.up.reset()

    def test_www_authenticate_names_configured_header(self):
        r = self.req("GET", "/a", [("X-API-Key", self.key)])
        self.assertError(r, 401, "missing_api_key", close=False)
        self.assertEqual(r.header_all("WWW-Authenticate"),
                         ['ApiKey realm="keygate", header="X-Service-Token"'])
        self.assertNothingForwarded()

    def test_bearer_not_accepted_when_off(self):
        r = self.req("GET", "/a", [("Authorization", "Bearer " + self.key)])
        self.assertError(r, 401, "missing_api_key")
        self.assertNothingForwarded()

    def test_custom_header_and_foreign_bearer_forwarded(self):
        r = self.req("GET", "/a", [("x-service-token", self.key), ("Authorization", "Bearer other-token")])
        self.assertEqual(r.status, 200, r)
        u = self.up.wait_requests(1)[0]
        self.assertEqual(u.header("X-Keygate-Key-Id"), "svc")
        # strip_credentials: false keeps the credential; an unrelated Bearer is never touched.
        self.assertEqual(u.header_all("X-Service-Token"), [self.key])
        self.assertEqual(u.header_all("Authorization"), ["Bearer other-token"])


class FailedAttemptThrottleTest(h.KeygateTestCase):
    """auth.failed_attempts: max 3 invalid keys per client, then a 2 s block."""

    @classmethod
    def setUpClass(cls):
        cls.up = cls.start_upstream()
        cls.key = h.new_key()
        cls.kg = cls.start_keygate(h.make_config(cls.up.port, keys=[h.key_entry("svc", key=cls.key)],
                                                 auth={"failed_attempts": {"max": 3, "window": "60s", "block": "2s"}}))

    def test_block_after_max_invalid_attempts(self):
        for _ in range(6):  # missing keys never count
            self.assertError(self.req("GET", "/a"), 401, "missing_api_key")
        for _ in range(3):
            self.assertError(self.req("GET", "/a", [("X-API-Key", h.new_key())]), 401, "invalid_api_key")
        r = self.req("GET", "/a", [("X-API-Key", h.new_key())])  # the 4th starts the block
        t_block = time.monotonic()
        self.assertIn(r.status, (401, 429), r)
        rid = h.unique_id()
        r = self.req("GET", "/a", [("X-API-Key", self.key), ("X-Request-Id", rid)])
        self.assertError(r, 429, "too_many_failed_attempts", close=False)
        retry = r.header("Retry-After")
        self.assertIsNotNone(retry, "429 without Retry-After")
        self.assertRegex(retry, r"^[0-9]+$")
        self.assertTrue(1 <= int(retry) <= 2, retry)
        log = self.kg.find_log(rid)
        self.assertIsNotNone(log)
        self.assertEqual(log.get("reason"), "throttled")
        # Public paths are not subject to the block.
        self.assertEqual(self.req("GET", "/healthz").status, 200)
        # 429s during the block neither count nor extend it.
        for _ in range(3):
            time.sleep(0.4)
            self.assertEqual(self.req("GET", "/a", [("X-API-Key", h.new_key())]).status, 429)
        time.sleep(max(0.0, t_block + 2.4 - time.monotonic()))
        r = self.req("GET", "/a", [("X-API-Key", self.key)])
        self.assertEqual(r.status, 200, f"block not lifted after 2 s: {r!r}")
        # The count restarted: one invalid key is a plain 401 again.
        self.assertError(self.req("GET", "/a", [("X-API-Key", h.new_key())]), 401, "invalid_api_key")


class ThrottleExemptTest(h.KeygateTestCase):
    """failed_attempts.exempt: an exempt client is never blocked."""

    @classmethod
    def setUpClass(cls):
        cls.up = cls.start_upstream()
        cls.key = h.new_key()
        cls.kg = cls.start_keygate(h.make_config(cls.up.port, keys=[h.key_entry("svc", key=cls.key)],
                                                 auth={"failed_attempts": {"max": 1, "window": "60s", "block": "60s",
                                                                           "exempt": ["127.0.0.0/8"]}}))

    def test_exempt_client_never_blocked(self):
        for _ in range(5):
            self.assertError(self.req("GET", "/a", [("X-API-Key", h.new_key())]), 401, "invalid_api_key")
        self.assertEqual(self.req("GET", "/a", [("X-API-Key", self.key)]).status, 200)


class KeyRateLimitTest(h.KeygateTestCase):
    """A key's rate_limit: over it → 429 rate_limited with Retry-After."""

    @classmethod
    def setUpClass(cls):
        cls.up = cls.start_upstream()
        cls.limited, cls.limited2, cls.free = h.new_key(), h.new_key(), h.new_key()
        cls.kg = cls.start_keygate(h.make_config(cls.up.port, keys=[
            h.key_entry("limited", key=cls.limited, rate_limit={"requests_per_second": 0.5, "burst": 2}),
            h.key_entry("limited2", key=cls.limited2, rate_limit={"requests_per_second": 0.5, "burst": 2}),
            h.key_entry("free", key=cls.free)], threads=2))

    def setUp(self):
        self.up.reset()

    def test_limit_shared_by_worker_threads(self):
        statuses = [self.req("GET", "/c", [("X-API-Key", self.limited2)]).status for _ in range(8)]
        self.assertEqual(statuses.count(200), 2, f"burst 2 over 8 connections and 2 workers: {statuses}")

    def test_rate_limited(self):
        statuses = []
        last = None
        with h.Client(self.kg.port) as c:
            for _ in range(4):
                last = c.request("GET", "/a", [("X-API-Key", self.limited)])
                statuses.append(last.status)
        self.assertEqual(statuses[:2], [200, 200])
        self.assertEqual(statuses[2:], [429, 429])
        self.assertError(last, 429, "rate_limited", close=False)
        retry = last.header("Retry-After")
        self.assertIsNotNone(retry)
        self.assertRegex(retry, r"^[0-9]+$")
        self.assertGreaterEqual(int(retry), 1)
        self.assertEqual(len(self.up.wait_requests(2)), 2)
        # Other keys are not affected.
        self.assertEqual(self.req("GET", "/b", [("X-API-Key", self.free)]).status, 200)


if __name__ == "__main__":
    h.main()
