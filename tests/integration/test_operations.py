#!/usr/bin/env python3
"""Operations: the admin listener (/healthz, /readyz, /metrics), `keygate healthcheck`,
draining on SIGTERM/SIGINT, and WebSocket tunnels (DESIGN.md §5, §1.11, §3 admin/limits).

Drain basics with drain_delay 0 (idle connection closed, in-flight exchange finished with
`Connection: close`, exit 0) are in test_startup.py; a single-message tunnel and the
`Upgrade: h2c` strip are in test_forwarding.py. This file covers the rest."""
import datetime
import math
import os
import re
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

SLACK = 0.6  # scheduling slack on a loaded 2-core machine

DENIAL_REASONS = {"missing", "duplicate", "unknown", "expired", "not_yet_valid", "disabled",
                  "insufficient_scope", "path_not_allowed", "rate_limited", "throttled"}


# --------------------------------------------------------------------------- Prometheus text

_METRIC_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_LABEL_NAME = r"[a-zA-Z_][a-zA-Z0-9_]*"
_HELP_RE = re.compile(rf"^# HELP ({_METRIC_NAME}) (.*)$")
_TYPE_RE = re.compile(rf"^# TYPE ({_METRIC_NAME}) (counter|gauge|histogram|summary|untyped)$")
_SAMPLE_RE = re.compile(rf"^({_METRIC_NAME})(\{{(.*)\}})? (\S+)( -?[0-9]+)?$")
_LABEL_RE = re.compile(rf'({_LABEL_NAME})="((?:[^"\\\n]|\\[\\"n])*)"')


class PromError(AssertionError):
    pass


def _parse_value(text: str) -> float:
    if text in ("+Inf", "-Inf", "NaN"):
        return float(text.replace("Inf", "inf").replace("NaN", "nan"))
    if not re.match(r"^[-+]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][-+]?[0-9]+)?$", text):
        raise PromError(f"bad sample value {text!r}")
    return float(text)


def _parse_labels(text: str, line: str) -> dict:
    labels: dict = {}
    pos = 0
    while pos < len(text):
        m = _LABEL_RE.match(text, pos)
        if not m:
            raise PromError(f"bad label set in {line!r}")
        name = m.group(1)
        if name in labels:
            raise PromError(f"label {name} repeated in {line!r}")
        labels[name] = re.sub(r"\\(.)", lambda e: "\n" if e.group(1) == "n" else e.group(1), m.group(2))
        pos = m.end()
        if pos < len(text):
            if text[pos] != ",":
                raise PromError(f"bad label separator in {line!r}")
            pos += 1
    return labels


def parse_prometheus(text: str) -> dict:
    """Strictly parses the Prometheus text exposition format (0.0.4). Returns
    {family: {"type": t, "help": s, "samples": [(name, labels, value)]}}. Raises
    PromError on: a malformed line, HELP/TYPE given twice or TYPE after the family's
    samples, a sample whose family has no TYPE, a family split into non-adjacent
    groups, a repeated series, a negative counter, a histogram whose buckets are not
    cumulative or whose +Inf bucket differs from _count."""
    if text and not text.endswith("\n"):
        raise PromError("exposition does not end with a newline")
    families: dict = {}
    seen_series: set = set()
    finished: set = set()
    current = None

    def family_of(name: str) -> str:
        for suffix, kinds in (("_bucket", ("histogram",)), ("_sum", ("histogram", "summary")),
                              ("_count", ("histogram", "summary"))):
            if name.endswith(suffix):
                base = name[: -len(suffix)]
                if base in families and families[base].get("type") in kinds:
                    return base
        return name

    for line in text.split("\n")[:-1] if text else []:
        if line == "":
            continue
        if line.startswith("#"):
            m = _HELP_RE.match(line)
            if m:
                fam = families.setdefault(m.group(1), {"samples": []})
                if "help" in fam:
                    raise PromError(f"second HELP for {m.group(1)}")
                fam["help"] = m.group(2)
                continue
            m = _TYPE_RE.match(line)
            if m:
                fam = families.setdefault(m.group(1), {"samples": []})
                if "type" in fam:
                    raise PromError(f"second TYPE for {m.group(1)}")
                if fam["samples"]:
                    raise PromError(f"TYPE for {m.group(1)} after its samples")
                fam["type"] = m.group(2)
                continue
            if line.startswith("# HELP") or line.startswith("# TYPE"):
                raise PromError(f"malformed line {line!r}")
            continue  # another comment
        m = _SAMPLE_RE.match(line)
        if not m:
            raise PromError(f"malformed sample line {line!r}")
        name, labels = m.group(1), _parse_labels(m.group(3) or "", line)
        value = _parse_value(m.group(4))
        fam_name = family_of(name)
        fam = families.get(fam_name)
        if fam is None or "type" not in fam:
            raise PromError(f"sample {name} has no TYPE line for its family")
        if fam_name != current:
            if fam_name in finished:
                raise PromError(f"samples of {fam_name} are not adjacent")
            if current is not None:
                finished.add(current)
            current = fam_name
        key = (name, tuple(sorted(labels.items())))
        if key in seen_series:
            raise PromError(f"series {line!r} repeated")
        seen_series.add(key)
        if fam["type"] == "counter" and not value >= 0:
            raise PromError(f"counter {line!r} is negative or NaN")
        fam["samples"].append((name, labels, value))

    for fam_name, fam in families.items():
        if "type" not in fam:
            raise PromError(f"family {fam_name} has HELP but no TYPE")
        if fam["type"] != "histogram":
            continue
        groups: dict = {}
        for name, labels, value in fam["samples"]:
            rest = tuple(sorted((k, v) for k, v in labels.items() if k != "le"))
            g = groups.setdefault(rest, {"buckets": [], "sum": None, "count": None})
            if name == fam_name + "_bucket":
                if "le" not in labels:
                    raise PromError(f"{fam_name} bucket without le")
                g["buckets"].append((_parse_value(labels["le"]), value))
            elif name == fam_name + "_sum":
                g["sum"] = value
            elif name == fam_name + "_count":
                g["count"] = value
            else:
                raise PromError(f"unexpected sample {name} in histogram {fam_name}")
        for rest, g in groups.items():
            if g["sum"] is None or g["count"] is None or not g["buckets"]:
                raise PromError(f"histogram {fam_name}{rest} lacks _sum, _count or buckets")
            bks = sorted(g["buckets"])
            if bks[-1][0] != math.inf:
                raise PromError(f"histogram {fam_name}{rest} has no +Inf bucket")
            if any(b[1] > c[1] for b, c in zip(bks, bks[1:])):
                raise PromError(f"histogram {fam_name}{rest} buckets are not cumulative")
            if bks[-1][1] != g["count"]:
                raise PromError(f"histogram {fam_name}{rest}: +Inf bucket != _count")
    return families


class Metrics:
    """One scrape of /metrics, parsed."""

    def __init__(self, text: str):
        self.text = text
        self.families = parse_prometheus(text)

    def value(self, name: str, **labels) -> float | None:
        """The value of the series `name` with exactly these labels, or None."""
        for fam in self.families.values():
            for n, lab, v in fam["samples"]:
                if n == name and lab == labels:
                    return v
        return None

    def get(self, name: str, **labels) -> float:
        """Like value(), absent counting as 0 (a labelled counter appears on first use)."""
        v = self.value(name, **labels)
        return 0.0 if v is None else v

    def series(self, name: str) -> list:
        return [(lab, v) for fam in self.families.values() for n, lab, v in fam["samples"] if n == name]


def expected_epoch(text: str) -> int:
    return int(datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp())


def utc_text(epoch: float) -> str:
    return datetime.datetime.fromtimestamp(int(epoch), datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class OpsTestCase(h.KeygateTestCase):

    def admin(self, path, kg=None, method="GET"):
        kg = kg or self.kg
        return self.req(method, path, port=kg.config["admin"]["port"])

    def scrape(self, kg=None) -> Metrics:
        r = self.admin("/metrics", kg)
        self.assertEqual(r.status, 200, r)
        ctype = r.header("Content-Type") or ""
        self.assertTrue(ctype.startswith("text/plain"), ctype)
        try:
            return Metrics(r.body.decode("utf-8"))
        except PromError as e:
            self.fail(f"/metrics is not valid Prometheus text: {e}\n{r.body.decode('utf-8', 'replace')}")

    def wait_metrics(self, pred, kg=None, within=2.0) -> Metrics:
        """Scrapes until pred(metrics) holds (counters may be bumped just after the
        response is written); returns the last scrape either way."""
        deadline = time.monotonic() + within
        while True:
            m = self.scrape(kg)
            if pred(m) or time.monotonic() > deadline:
                return m
            time.sleep(0.05)


# --------------------------------------------------------------------------- admin listener

class AdminTest(OpsTestCase):

    @classmethod
    def setUpClass(cls):
        cls.up = cls.start_upstream()
        cls.keys = {n: h.new_key() for n in ("alpha", "beta", "gamma", "expired", "disabled",
                                              "later", "limited", "bound")}
        k = cls.keys
        cls.kg = cls.start_keygate(h.make_config(cls.up.port, keys=[
            h.key_entry("alpha", key=k["alpha"], scopes=["orders:read"], expires_at="2099-01-01T00:00:00Z"),
            h.key_entry("beta", hash=h.key_hash(k["beta"]), expires_at="2098-12-31T20:00:00-04:00"),
            h.key_entry("gamma", key=k["gamma"]),
            h.key_entry("expired", key=k["expired"], expires_at="2020-01-01T00:00:00Z"),
            h.key_entry("disabled", key=k["disabled"], disabled=True),
            h.key_entry("later", key=k["later"], not_before="2099-01-01T00:00:00Z"),
            h.key_entry("limited", key=k["limited"], rate_limit={"requests_per_second": 0.01, "burst": 1}),
            h.key_entry("bound", key=k["bound"], allowed_paths=["/tenants/acme/*"]),
        ], auth={"rules": [{"path": "/admin/*", "scopes": ["admin"]}]}))

    def setUp(self):
        self.up.reset()

    def K(self, name):
        return [("X-API-Key", self.keys[name])]

    def test_healthz(self):
        r = self.admin("/healthz")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.body.strip(), b"ok")

    def test_readyz_with_keys(self):
        r = self.admin("/readyz")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.body.strip(), b"ready")

    def test_admin_paths_not_on_main_listener_and_not_forwarded(self):
        # The admin listener answers itself; nothing of it reaches the upstream.
        for p in ("/healthz", "/readyz", "/metrics"):
            self.admin(p)
        self.assertNothingForwarded()
        # /metrics on the main port is an ordinary protected path.
        self.assertError(self.req("GET", "/metrics"), 401, "missing_api_key")

    def test_metrics_parse_and_families(self):
        m = self.scrape()
        want = {"keygate_requests_total": "counter", "keygate_auth_denials_total": "counter",
                "keygate_upstream_request_duration_seconds": "histogram",
                "keygate_upstream_errors_total": "counter", "keygate_open_connections": "gauge",
                "keygate_keys_loaded": "gauge", "keygate_key_reloads_total": "counter",
                "keygate_key_expiry_timestamp_seconds": "gauge"}
        for name, typ in want.items():
            self.assertIn(name, m.families, f"family {name} missing")
            self.assertEqual(m.families[name]["type"], typ, name)
            self.assertTrue(m.families[name].get("help"), f"{name} has no HELP")
        reasons = {lab.get("reason") for lab, _ in m.series("keygate_auth_denials_total")}
        self.assertEqual(reasons, DENIAL_REASONS, "every denial reason must be present from the start")
        for lab, _ in m.series("keygate_auth_denials_total"):
            self.assertEqual(set(lab), {"reason"})
        for lab, _ in m.series("keygate_requests_total"):
            self.assertEqual(set(lab), {"outcome", "code"})
            self.assertIn(lab["outcome"], {"allowed", "denied", "public", "error"})
            self.assertRegex(lab["code"], r"^[1-5][0-9][0-9]$")
        for lab, _ in m.series("keygate_upstream_errors_total"):
            self.assertEqual(set(lab), {"kind"})
        self.assertEqual({lab["result"] for lab, _ in m.series("keygate_key_reloads_total")},
                         {"success", "failure"})
        for fam in m.families.values():
            for _, lab, _ in fam["samples"]:
                for v in lab.values():
                    for secret in self.keys.values():
                        self.assertNotIn(secret, v)
        for secret in self.keys.values():
            self.assertNotIn(secret, m.text)
            self.assertNotIn(h.key_hash(secret)[7:], m.text)

    def test_parser_is_strict(self):
        good = ("# HELP a_total x\n# TYPE a_total counter\na_total{k=\"v\"} 1\n"
                "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 3\nh_count 2\n")
        parse_prometheus(good)
        for bad in ("a_total 1\n",                                           # no TYPE
                    "# TYPE a counter\na{k=v} 1\n",                          # unquoted label
                    "# TYPE a counter\na 1",                                 # no final newline
                    "# TYPE a counter\na -1\n",                              # negative counter
                    "# TYPE a gauge\na 1\na 2\n",                            # repeated series
                    "# TYPE a gauge\n# TYPE b gauge\na 1\nb 1\na{x=\"1\"} 1\n",  # split family
                    "# TYPE h histogram\nh_bucket{le=\"1\"} 3\nh_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 2\n",
                    "# TYPE a gauge\na one\n"):
            with self.assertRaises(PromError, msg=bad):
                parse_prometheus(bad)

    def assertDenialCounted(self, reason, status, code, headers, target="/orders/1", method="GET"):
        before = self.scrape()
        r = self.req(method, target, headers)
        self.assertError(r, status, code)
        want = before.get("keygate_auth_denials_total", reason=reason) + 1
        want_req = before.get("keygate_requests_total", outcome="denied", code=str(status)) + 1
        # Both counters move after the answer is written: wait for both.
        after = self.wait_metrics(lambda m: m.get("keygate_auth_denials_total", reason=reason) >= want
                                  and m.get("keygate_requests_total", outcome="denied",
                                            code=str(status)) >= want_req)
        self.assertEqual(after.get("keygate_auth_denials_total", reason=reason), want,
                         f"denial reason {reason} not counted once")
        for other in DENIAL_REASONS - {reason}:
            self.assertEqual(after.get("keygate_auth_denials_total", reason=other),
                             before.get("keygate_auth_denials_total", reason=other),
                             f"a {reason} denial also counted as {other}")
        self.assertEqual(after.get("keygate_requests_total", outcome="denied", code=str(status)),
                         before.get("keygate_requests_total", outcome="denied", code=str(status)) + 1)
        self.assertEqual(after.get("keygate_requests_total", outcome="allowed", code="200"),
                         before.get("keygate_requests_total", outcome="allowed", code="200"))

    def test_unknown_and_missing_keys_counted(self):
        self.assertDenialCounted("unknown", 401, "invalid_api_key", [("X-API-Key", h.new_key())])
        self.assertDenialCounted("missing", 401, "missing_api_key", [])
        self.assertNothingForwarded()

    def test_every_other_denial_reason_counted(self):
        self.assertDenialCounted("duplicate", 401, "invalid_api_key", self.K("gamma") + self.K("gamma"))
        self.assertDenialCounted("expired", 401, "invalid_api_key", self.K("expired"))
        self.assertDenialCounted("disabled", 401, "invalid_api_key", self.K("disabled"))
        self.assertDenialCounted("not_yet_valid", 401, "invalid_api_key", self.K("later"))
        self.assertDenialCounted("insufficient_scope", 403, "insufficient_scope", self.K("alpha"),
                                 target="/admin/x", method="POST")
        self.assertDenialCounted("path_not_allowed", 403, "insufficient_scope", self.K("bound"),
                                 target="/tenants/other/x")
        self.assertEqual(self.req("GET", "/r", self.K("limited")).status, 200)
        self.up.reset()
        self.assertDenialCounted("rate_limited", 429, "rate_limited", self.K("limited"))
        self.assertNothingForwarded()

    def test_allowed_request_counted_and_timed(self):
        hist = "keygate_upstream_request_duration_seconds"
        before = self.scrape()
        r = self.req("GET", "/slow?ms=300", self.K("gamma"))
        self.assertEqual(r.status, 200, r)
        want = before.get("keygate_requests_total", outcome="allowed", code="200") + 1
        after = self.wait_metrics(lambda m: m.get("keygate_requests_total", outcome="allowed", code="200") >= want)
        self.assertEqual(after.get("keygate_requests_total", outcome="allowed", code="200"), want)
        self.assertEqual(after.get(hist + "_count"), before.get(hist + "_count") + 1)
        grew = after.get(hist + "_sum") - before.get(hist + "_sum")
        self.assertGreaterEqual(grew, 0.29, "upstream duration not measured")
        self.assertLess(grew, 3.0)
        # A 0.3 s exchange lands in le=0.5 but not in le=0.25.
        self.assertEqual(after.get(hist + "_bucket", le="0.25"), before.get(hist + "_bucket", le="0.25"))
        self.assertEqual(after.get(hist + "_bucket", le="+Inf"), before.get(hist + "_bucket", le="+Inf") + 1)
        self.assertEqual(after.get(hist + "_bucket", le="5"), before.get(hist + "_bucket", le="5") + 1)

    def test_public_request_counted(self):
        before = self.scrape()
        self.assertEqual(self.req("GET", "/healthz").status, 200)
        want = before.get("keygate_requests_total", outcome="public", code="200") + 1
        after = self.wait_metrics(lambda m: m.get("keygate_requests_total", outcome="public", code="200") >= want)
        self.assertEqual(after.get("keygate_requests_total", outcome="public", code="200"), want)

    def test_own_error_counted_as_error(self):
        before = self.scrape()
        self.assertError(self.req("GET", "/a/%2F/b", self.K("gamma")), 400, "bad_request")
        want = before.get("keygate_requests_total", outcome="error", code="400") + 1
        after = self.wait_metrics(lambda m: m.get("keygate_requests_total", outcome="error", code="400") >= want)
        self.assertEqual(after.get("keygate_requests_total", outcome="error", code="400"), want)
        self.assertEqual(sum(v for _, v in after.series("keygate_auth_denials_total")),
                         sum(v for _, v in before.series("keygate_auth_denials_total")))
        # An upstream's own 404 is an allowed exchange, not a denial.
        before = after
        self.assertEqual(self.req("GET", "/status?code=404", self.K("gamma")).status, 404)
        want = before.get("keygate_requests_total", outcome="allowed", code="404") + 1
        after = self.wait_metrics(lambda m: m.get("keygate_requests_total", outcome="allowed", code="404") >= want)
        self.assertEqual(after.get("keygate_requests_total", outcome="allowed", code="404"), want)
        self.assertEqual(after.get("keygate_requests_total", outcome="denied", code="404"), 0)

    def test_keys_loaded_counts_every_key(self):
        # Active or not: disabled, expired and not-yet-valid keys are loaded keys too.
        self.assertEqual(self.scrape().value("keygate_keys_loaded"), len(self.keys))

    def test_expiry_gauge(self):
        m = self.scrape()
        series = {lab["key_id"]: v for lab, v in m.series("keygate_key_expiry_timestamp_seconds")}
        for lab, _ in m.series("keygate_key_expiry_timestamp_seconds"):
            self.assertEqual(set(lab), {"key_id"})
        self.assertEqual(series.get("alpha"), expected_epoch("2099-01-01T00:00:00Z"))
        self.assertEqual(series.get("beta"), expected_epoch("2098-12-31T20:00:00-04:00"))
        self.assertEqual(series.get("beta"), 4070908800)
        self.assertEqual(series.get("expired"), expected_epoch("2020-01-01T00:00:00Z"))
        for no_expiry in ("gamma", "disabled", "later", "limited", "bound"):
            self.assertNotIn(no_expiry, series, f"{no_expiry} has no expires_at")

    def test_open_connections_gauge(self):
        m = self.wait_metrics(lambda m: m.value("keygate_open_connections") == 0)
        self.assertEqual(m.value("keygate_open_connections"), 0, "admin scrapes must not count")
        clients = [h.Client(self.kg.port) for _ in range(3)]
        try:
            self.assertEqual(clients[0].request("GET", "/r", self.K("gamma")).status, 200)
            m = self.wait_metrics(lambda m: m.value("keygate_open_connections") == 3)
            self.assertEqual(m.value("keygate_open_connections"), 3)
        finally:
            for c in clients:
                c.close()
        m = self.wait_metrics(lambda m: m.value("keygate_open_connections") == 0)
        self.assertEqual(m.value("keygate_open_connections"), 0)


class MetricsEdgeTest(OpsTestCase):

    @classmethod
    def setUpClass(cls):
        cls.up = cls.start_upstream()

    def test_at_most_1000_expiry_series_soonest_first(self):
        base = datetime.datetime(2031, 1, 1, tzinfo=datetime.timezone.utc)
        order = [(i * 7919) % 1010 for i in range(1010)]  # a permutation: no sorted config order
        self.assertEqual(len(set(order)), 1010)
        keys, expiries = [], {}
        for i, day in enumerate(order):
            when = base + datetime.timedelta(days=day)
            keys.append(h.key_entry(f"k{i:04d}", hash=h.key_hash(f"metrics-key-{i:04d}-" + "x" * 32),
                                    expires_at=when.strftime("%Y-%m-%dT%H:%M:%SZ")))
            expiries[f"k{i:04d}"] = int(when.timestamp())
        keys.append(h.key_entry("forever", key=h.new_key()))
        with h.Keygate(h.make_config(self.up.port, keys=keys)) as kg:
            m = self.scrape(kg)
            self.assertEqual(m.value("keygate_keys_loaded"), 1011)
            got = {lab["key_id"]: v for lab, v in m.series("keygate_key_expiry_timestamp_seconds")}
            self.assertEqual(len(got), 1000)
            soonest = sorted(expiries, key=expiries.get)[:1000]
            self.assertEqual(set(got), set(soonest), "the series must be the 1,000 soonest expiries")
            for kid, v in got.items():
                self.assertEqual(v, expiries[kid], kid)

    def test_upstream_error_counted(self):
        key = h.new_key()
        with h.Keygate(h.make_config(h.free_port(), keys=[h.key_entry("a", key=key)])) as kg:
            before = self.scrape(kg)
            r = self.req("GET", "/x", [("X-API-Key", key)], port=kg.port)
            self.assertError(r, 502, "upstream_unavailable")
            # The error is counted before the answer, the request after it: wait for both.
            after = self.wait_metrics(
                lambda m: m.get("keygate_upstream_errors_total", kind="connect") >= 1
                and m.get("keygate_requests_total", outcome="error", code="502") >= 1, kg)
            self.assertEqual(after.get("keygate_upstream_errors_total", kind="connect"),
                             before.get("keygate_upstream_errors_total", kind="connect") + 1)
            total = lambda m: sum(v for _, v in m.series("keygate_upstream_errors_total"))  # noqa: E731
            self.assertEqual(total(after), total(before) + 1)
            self.assertEqual(after.get("keygate_requests_total", outcome="error", code="502"), 1)
            self.assertEqual(after.get("keygate_requests_total", outcome="allowed", code="502"), 0)

    def test_throttled_counted(self):
        key = h.new_key()
        cfg = h.make_config(self.up.port, keys=[h.key_entry("a", key=key)],
                            auth={"failed_attempts": {"max": 1, "window": "60s", "block": "60s"}})
        with h.Keygate(cfg) as kg:
            self.assertEqual(self.req("GET", "/x", [("X-API-Key", h.new_key())], port=kg.port).status, 401)
            # The max + 1-th invalid attempt starts the block; it may itself be answered 401 or 429.
            second = self.req("GET", "/x", [("X-API-Key", h.new_key())], port=kg.port).status
            self.assertIn(second, (401, 429))
            r = self.req("GET", "/x", [("X-API-Key", key)], port=kg.port)
            self.assertError(r, 429, "too_many_failed_attempts")
            throttled = 1 + (second == 429)
            m = self.wait_metrics(
                lambda m: m.get("keygate_auth_denials_total", reason="throttled") >= throttled, kg)
            self.assertEqual(m.get("keygate_auth_denials_total", reason="throttled"), throttled)
            self.assertEqual(m.get("keygate_auth_denials_total", reason="unknown"), 1 + (second == 401))
            self.assertEqual(m.get("keygate_requests_total", outcome="denied", code="429"), throttled)


# --------------------------------------------------------------------------- healthcheck command

class HealthcheckTest(OpsTestCase):

    @classmethod
    def setUpClass(cls):
        cls.up = cls.start_upstream()
        cls.kg = cls.start_keygate(h.make_config(cls.up.port, keys=[h.key_entry("a", key=h.new_key())]))

    def test_healthcheck_url(self):
        admin = self.kg.config["admin"]["port"]
        p = h.run_cli(["healthcheck", "--url", f"http://127.0.0.1:{admin}/healthz"])
        self.assertEqual(p.returncode, 0, p.stderr)
        p = h.run_cli(["healthcheck", "--url", f"http://127.0.0.1:{admin}/readyz"])
        self.assertEqual(p.returncode, 0, p.stderr)
        p = h.run_cli(["healthcheck", "--url", f"http://localhost:{admin}/healthz"])
        self.assertEqual(p.returncode, 0, p.stderr)

    def test_healthcheck_closed_port(self):
        t0 = time.monotonic()
        p = h.run_cli(["healthcheck", "--url", f"http://127.0.0.1:{h.free_port()}/healthz"])
        self.assertEqual(p.returncode, 1, p.stdout + p.stderr)
        self.assertLess(time.monotonic() - t0, 5)

    def test_healthcheck_unanswered_times_out(self):
        # A port that accepts (the kernel's backlog) but never answers: exit 1, not a hang.
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            s.listen(8)
            t0 = time.monotonic()
            p = h.run_cli(["healthcheck", "--url", f"http://127.0.0.1:{s.getsockname()[1]}/healthz"],
                          timeout=20)
            self.assertEqual(p.returncode, 1, p.stdout + p.stderr)
            self.assertLess(time.monotonic() - t0, 10)

    def test_healthcheck_non_200(self):
        admin = self.kg.config["admin"]["port"]
        p = h.run_cli(["healthcheck", "--url", f"http://127.0.0.1:{admin}/no-such-page"])
        self.assertEqual(p.returncode, 1, p.stdout + p.stderr)

    def test_healthcheck_from_config(self):
        p = h.run_cli(["healthcheck", "--config", self.kg.config_path])
        self.assertEqual(p.returncode, 0, p.stderr)
        cfg = h.make_config(self.up.port, keys=[h.key_entry("a", key=h.new_key())])
        other = h.Keygate(cfg)  # written, never started: its admin port is closed
        try:
            p = h.run_cli(["healthcheck", "--config", other.config_path])
            self.assertEqual(p.returncode, 1, p.stdout + p.stderr)
        finally:
            other.cleanup()


# --------------------------------------------------------------------------- drain

class DrainTest(OpsTestCase):

    @classmethod
    def setUpClass(cls):
        cls.events = WsEvents()
        cls.up = cls.start_upstream(routes={"/tun": make_tunnel_route(cls.events)})

    def setUp(self):
        self.up.reset()
        self.key = h.new_key()

    def start(self, delay, timeout):
        cfg = h.make_config(self.up.port, keys=[h.key_entry("a", key=self.key)],
                            upstream={"response_timeout": "15s"},
                            limits={"drain_delay": delay, "drain_timeout": timeout})
        kg = h.Keygate(cfg)
        kg.__enter__()
        self.addCleanup(kg.__exit__, None, None, None)
        return kg

    def K(self):
        return [("X-API-Key", self.key)]

    def wait_draining(self, kg, within=0.3):
        """/readyz right after a signal: the signal is delivered asynchronously, so allow
        keygate a moment (well under any drain_delay used here) to see it."""
        deadline = time.monotonic() + within
        while True:
            r = self.admin("/readyz", kg)
            if r.status != 200 or time.monotonic() > deadline:
                return r
            time.sleep(0.01)

    def start_slow(self, kg, ms):
        c = h.Client(kg.port, timeout=15)
        self.addCleanup(c.close)
        n = len(self.up.heads)
        c.send(h.build_request("GET", f"/slow?ms={ms}", self.K()))
        self.assertGreater(len(self.up.wait_heads(n + 1)), n, "slow request never reached the upstream")
        return c

    def test_drain_delay_then_listener_closes_and_in_flight_finishes(self):
        kg = self.start("1s", "10s")
        slow = self.start_slow(kg, 2000)
        t_sent = time.monotonic()
        t0 = time.monotonic()
        kg.proc.send_signal(signal.SIGTERM)
        r = self.wait_draining(kg)
        self.assertLess(time.monotonic() - t0, 0.5, "/readyz not 503 at once")
        self.assertEqual(r.status, 503, r)
        self.assertEqual(r.body.strip(), b"draining")
        self.assertEqual(self.admin("/healthz", kg).status, 200)
        # During the delay: new connections are accepted and served normally.
        time.sleep(0.2)
        r = self.req("GET", "/during-delay", self.K(), port=kg.port)
        self.assertEqual(r.status, 200, r)
        self.assertLess(time.monotonic() - t0, 0.9, "too slow to test inside the delay")
        # After the delay: the listener is closed.
        while h.port_accepts(kg.port) and time.monotonic() - t0 < 5:
            time.sleep(0.02)
        closed_at = time.monotonic() - t0
        self.assertGreater(closed_at, 0.9, "listener closed before drain_delay")
        self.assertLess(closed_at, 1.0 + SLACK, "listener still open after drain_delay")
        with self.assertRaises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", kg.port), timeout=1).close()
        # The admin listener stays up until the process exits: liveness passes, readiness not.
        r = self.admin("/readyz", kg)
        self.assertEqual((r.status, r.body.strip()), (503, b"draining"))
        self.assertEqual(self.admin("/healthz", kg).status, 200)
        admin = kg.config["admin"]["port"]
        self.assertEqual(h.run_cli(["healthcheck", "--url", f"http://127.0.0.1:{admin}/healthz"]).returncode, 0)
        self.assertEqual(h.run_cli(["healthcheck", "--url", f"http://127.0.0.1:{admin}/readyz"]).returncode, 1)
        self.assertTrue(kg.alive(), "exited while an exchange was in flight")
        # The in-flight exchange completes, with Connection: close.
        r = slow.read_response(timeout=5)
        self.assertEqual(r.status, 200, r)
        self.assertTrue(r.complete)
        self.assertTrue(r.has_close(), f"no Connection: close in {r.headers}")
        self.assertGreater(time.monotonic() - t_sent, 1.9)
        self.assertTrue(slow.wait_closed(2))
        self.assertEqual(kg.proc.wait(3), 0, kg.stderr())

    def test_idle_keepalive_served_during_delay_then_closed(self):
        kg = self.start("1s", "10s")
        idle = h.Client(kg.port)
        self.addCleanup(idle.close)
        self.assertEqual(idle.request("GET", "/a", self.K()).status, 200)
        t0 = time.monotonic()
        kg.proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        r = idle.request("GET", "/b", self.K())
        self.assertEqual(r.status, 200, "a keep-alive connection must be served during drain_delay")
        self.assertFalse(idle.wait_closed(0.3), "idle connection closed before drain_delay passed")
        self.assertTrue(idle.wait_closed(1.0 + SLACK), "idle keep-alive connection not closed after the delay")
        self.assertEqual(idle.pending(), b"", "bytes sent on an idle connection being closed")
        self.assertGreater(time.monotonic() - t0, 0.9)
        self.assertEqual(kg.proc.wait(3), 0, kg.stderr())
        self.assertLess(time.monotonic() - t0, 1.0 + SLACK + 1)

    def test_drain_timeout_cuts_long_exchange(self):
        kg = self.start("0s", "1s")
        slow = self.start_slow(kg, 8000)
        t0 = time.monotonic()
        kg.proc.send_signal(signal.SIGTERM)
        self.assertTrue(slow.wait_closed(1.0 + 1.0), "in-flight exchange not cut at drain_timeout")
        self.assertNotIn(b"HTTP/1.1 200", slow.pending(), "the slow response cannot have arrived yet")
        code = kg.proc.wait(max(0.1, 2.0 - (time.monotonic() - t0)))
        self.assertEqual(code, 0, kg.stderr())
        self.assertGreater(time.monotonic() - t0, 0.9, "exited before drain_timeout")
        self.assertLess(time.monotonic() - t0, 2.0)

    def test_exit_as_soon_as_last_exchange_ends(self):
        kg = self.start("0s", "10s")
        slow = self.start_slow(kg, 700)
        t0 = time.monotonic()
        kg.proc.send_signal(signal.SIGTERM)
        r = slow.read_response(timeout=5)
        self.assertEqual(r.status, 200, r)
        self.assertTrue(r.has_close())
        self.assertEqual(kg.proc.wait(3), 0, kg.stderr())
        self.assertLess(time.monotonic() - t0, 0.7 + SLACK + 0.5, "waited for drain_timeout needlessly")

    def test_sigint_drains_like_sigterm(self):
        kg = self.start("0s", "10s")
        slow = self.start_slow(kg, 800)
        kg.proc.send_signal(signal.SIGINT)
        r = self.wait_draining(kg)
        self.assertEqual((r.status, r.body.strip()), (503, b"draining"))
        r = slow.read_response(timeout=5)
        self.assertEqual(r.status, 200, r)
        self.assertTrue(r.has_close())
        self.assertEqual(kg.proc.wait(3), 0, kg.stderr())

    def test_websocket_tunnel_runs_until_drain_timeout(self):
        kg = self.start("0s", "2s")
        c = h.Client(kg.port)
        self.addCleanup(c.close)
        c.send(h.build_request("GET", "/tun?name=drain", self.K() + WS_HEADERS))
        self.assertEqual(c.read_response().status, 101)
        t0 = time.monotonic()
        kg.proc.send_signal(signal.SIGTERM)
        time.sleep(1.0)
        c.send(b"still-tunnelled")
        deadline = time.monotonic() + 2
        got = b""
        while len(got) < 15:
            part = c.bs.read_some(deadline)
            self.assertTrue(part, "tunnel closed before drain_timeout")
            got += part
        self.assertEqual(got, b"still-tunnelled")
        self.assertTrue(c.wait_closed(1.0 + SLACK + 0.5), "tunnel not closed at drain_timeout")
        self.assertGreater(time.monotonic() - t0, 1.8)
        self.assertEqual(kg.proc.wait(2), 0, kg.stderr())

    def test_second_signal_closes_everything_at_once(self):
        kg = self.start("5s", "20s")
        slow = self.start_slow(kg, 8000)
        idle = h.Client(kg.port)
        self.addCleanup(idle.close)
        self.assertEqual(idle.request("GET", "/a", self.K()).status, 200)
        kg.proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        self.assertTrue(kg.alive())
        t0 = time.monotonic()
        kg.proc.send_signal(signal.SIGTERM)
        self.assertTrue(slow.wait_closed(1.0), "second SIGTERM left the in-flight exchange open")
        self.assertTrue(idle.wait_closed(1.0))
        self.assertEqual(kg.proc.wait(2), 0, kg.stderr())
        self.assertLess(time.monotonic() - t0, 1.5)


# --------------------------------------------------------------------------- WebSocket

WS_HEADERS = [("Connection", "Upgrade"), ("Upgrade", "websocket"),
              ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="), ("Sec-WebSocket-Version", "13")]


class WsEvents:
    """What the tunnel endpoint of the test upstream saw (one entry per tunnel)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.ended: dict = {}  # tunnel name -> "eof" | "timeout"

    def end(self, name, how):
        with self.lock:
            self.ended[name] = how

    def wait(self, name, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if name in self.ended:
                    return self.ended[name]
            time.sleep(0.02)
        return None


def make_tunnel_route(events: WsEvents):
    """/tun?name=N[&greet=TEXT][&tick_ms=MS&ticks=K][&bye=1]: answers 101, sends `greet`,
    then echoes every byte it receives unchanged (prefixing nothing), or with tick_ms
    sends K ticks `t<i>;` MS apart without reading, or with bye=1 sends `bye` and
    closes. Records in `events` how the tunnel ended on its side."""

    def route(up, conn, req):
        name = req.q("name", "t")
        if (req.header("Upgrade") or "").lower() != "websocket":
            return conn.respond(400, b"{}")
        conn.send(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n")
        if req.q("greet"):
            conn.send(req.q("greet").encode())
        if req.q("bye"):
            conn.send(b"bye")
            events.end(name, "closed-by-upstream")
            return False
        if req.q("tick_ms"):
            for i in range(int(req.q("ticks", "5"))):
                if up.stopping.wait(int(req.q("tick_ms")) / 1000):
                    break
                if not conn.send(b"t%d;" % i):
                    events.end(name, "send-failed")
                    return False
        pending = bytes(conn.bs.buf)
        conn.bs.buf.clear()
        if pending:
            conn.send(pending)
        while not up.stopping.is_set():
            try:
                chunk = conn.bs.read_some(time.monotonic() + 30)
            except socket.timeout:
                events.end(name, "timeout")
                return False
            if not chunk:
                events.end(name, "eof")
                return False
            if not conn.send(chunk):
                events.end(name, "send-failed")
                return False
        return False

    return route


class TunnelMixin:

    def open_tunnel(self, kg, key, name, query=""):
        c = h.Client(kg.port)
        self.addCleanup(c.close)
        c.send(h.build_request("GET", f"/tun?name={name}{query}", [("X-API-Key", key)] + WS_HEADERS))
        r = c.read_response()
        self.assertEqual(r.status, 101, r)
        self.assertEqual((r.header("Upgrade") or "").lower(), "websocket")
        self.assertIn("upgrade", r.connection_tokens())
        return c

    def read_exactly(self, c, n, timeout=3.0):
        deadline = time.monotonic() + timeout
        got = b""
        while len(got) < n:
            part = c.bs.read_some(deadline, n - len(got))
            if not part:
                self.fail(f"tunnel closed after {got!r}")
            got += part
        return got

    def echo(self, c, data):
        c.send(data)
        self.assertEqual(self.read_exactly(c, len(data)), data)


class WebSocketTest(TunnelMixin, OpsTestCase):

    @classmethod
    def setUpClass(cls):
        cls.events = WsEvents()
        cls.up = cls.start_upstream(routes={"/tun": make_tunnel_route(cls.events)})
        cls.key, cls.reader = h.new_key(), h.new_key()
        cls.kg = cls.start_keygate(h.make_config(cls.up.port, keys=[
            h.key_entry("alpha", key=cls.key, scopes=["chat"]),
            h.key_entry("reader", key=cls.reader)],
            auth={"rules": [{"path": "/tun/private/*", "scopes": ["chat"]}]},
            limits={"idle_timeout": "1s"}))

    def setUp(self):
        self.up.reset()

    def test_messages_both_ways(self):
        c = self.open_tunnel(self.kg, self.key, "both", "&greet=hello-from-upstream")
        self.assertEqual(self.read_exactly(c, 19), b"hello-from-upstream")
        u = self.up.wait_heads(1)[0]
        self.assertEqual(u.header("X-Keygate-Key-Id"), "alpha")
        self.assertFalse(u.has("X-API-Key"))
        self.assertEqual(u.header("Sec-WebSocket-Key"), "dGhlIHNhbXBsZSBub25jZQ==")
        self.assertEqual(u.header("Sec-WebSocket-Version"), "13")
        for i in range(10):
            # A masked WebSocket text frame and arbitrary binary: the tunnel is byte-exact.
            mask = bytes([i, 1, 2, 3])
            self.echo(c, b"\x81\x85" + mask + bytes(b ^ mask[j % 4] for j, b in enumerate(b"hello")))
            self.echo(c, bytes(range(256)) + b"\r\n\r\nGET / HTTP/1.1\r\n\r\n")
        big = os.urandom(300_000)
        c.send(big)
        self.assertEqual(self.read_exactly(c, len(big), timeout=5), big)
        # Client closes: the upstream side of the tunnel sees EOF.
        c.close()
        self.assertEqual(self.events.wait("both", 2.0), "eof")

    def test_upstream_close_ends_tunnel(self):
        c = self.open_tunnel(self.kg, self.key, "bye", "&bye=1")
        self.assertEqual(self.read_exactly(c, 3), b"bye")
        self.assertTrue(c.wait_closed(1.0), "client side stays open after the upstream closed")
        self.assertEqual(c.pending(), b"")

    def test_unauthorised_upgrade_is_401_and_never_forwarded(self):
        for headers, code in (([], "missing_api_key"), ([("X-API-Key", h.new_key())], "invalid_api_key")):
            with h.Client(self.kg.port) as c:
                c.send(h.build_request("GET", "/tun?name=denied", headers + WS_HEADERS))
                r = c.read_response()
                self.assertError(r, 401, code)
                self.assertIsNone(r.header("Upgrade"))
                # Bytes after the denial are not tunnelled anywhere.
                c.try_send(b"\x81\x05hello")
        with h.Client(self.kg.port) as c:
            c.send(h.build_request("GET", "/tun/private/x?name=denied", [("X-API-Key", self.reader)] + WS_HEADERS))
            self.assertError(c.read_response(), 403, "insufficient_scope")
        self.assertNothingForwarded(settle=0.3)
        self.assertIsNone(self.events.wait("denied", 0.1))

    def test_idle_tunnel_closed_after_idle_timeout(self):
        c = self.open_tunnel(self.kg, self.key, "idle")
        self.echo(c, b"one")
        t0 = time.monotonic()
        self.assertFalse(c.wait_closed(0.7), "tunnel closed before idle_timeout")
        self.assertTrue(c.wait_closed(1.0 + SLACK), "idle tunnel not closed after idle_timeout")
        self.assertLess(time.monotonic() - t0, 1.0 + SLACK + 0.1)
        self.assertEqual(c.pending(), b"")
        self.assertEqual(self.events.wait("idle", 1.0), "eof", "upstream side of the tunnel not closed")

    def test_traffic_keeps_tunnel_open(self):
        c = self.open_tunnel(self.kg, self.key, "busy")
        t0 = time.monotonic()
        i = 0
        while time.monotonic() - t0 < 2.5:  # 2.5 idle_timeouts, a byte every 0.4 s
            self.echo(c, b"m%d" % i)
            i += 1
            time.sleep(0.4)
        self.assertTrue(c.wait_closed(1.0 + SLACK))

    def test_one_way_traffic_keeps_tunnel_open(self):
        # The upstream pushes a tick every 0.4 s for 2.4 s while the client stays silent:
        # bytes flow, so the tunnel is not idle.
        c = self.open_tunnel(self.kg, self.key, "push", "&tick_ms=400&ticks=6")
        want = b"".join(b"t%d;" % i for i in range(6))
        self.assertEqual(self.read_exactly(c, len(want), timeout=5), want)
        self.echo(c, b"still-open")


class WebSocketKeyLifecycleTest(TunnelMixin, OpsTestCase):
    """A tunnel is closed when its key is removed by a reload or expires (§1.11)."""

    @classmethod
    def setUpClass(cls):
        cls.events = WsEvents()
        cls.up = cls.start_upstream(routes={"/tun": make_tunnel_route(cls.events)})

    def setUp(self):
        self.up.reset()
        self.dir = tempfile.mkdtemp(prefix="keygate-it-ws-")
        self.addCleanup(shutil.rmtree, self.dir, True)

    def test_tunnel_closed_when_key_removed_by_reload(self):
        gone, stays = h.new_key(), h.new_key()
        path = os.path.join(self.dir, "keys.yaml")

        def write(entries):
            with open(path + ".tmp", "w") as f:
                f.write(h.to_yaml({"keys": entries}) + "\n")
            os.replace(path + ".tmp", path)

        write([h.key_entry("gone", key=gone), h.key_entry("stays", key=stays)])
        cfg = h.make_config(self.up.port, keys=[], auth={"keys_file": path, "reload_interval": "1h"},
                            limits={"drain_timeout": "1s"})
        with h.Keygate(cfg) as kg:
            a = self.open_tunnel(kg, gone, "removed")
            b = self.open_tunnel(kg, stays, "kept")
            self.echo(a, b"before")
            write([h.key_entry("stays", key=stays)])
            kg.proc.send_signal(signal.SIGHUP)
            # The key is re-checked on the session's timer, at least every min(timeouts) (2 s here).
            self.assertTrue(a.wait_closed(2.0 + 1.0), "tunnel of a removed key still open after the reload")
            self.assertEqual(self.events.wait("removed", 1.0), "eof")
            self.echo(b, b"other-tunnel-unaffected")

    def test_tunnel_closed_when_key_expires(self):
        soon, other = h.new_key(), h.new_key()
        expires = math.floor(time.time()) + 3
        cfg = h.make_config(self.up.port, keys=[h.key_entry("soon", key=soon, expires_at=utc_text(expires)),
                                                h.key_entry("other", key=other)],
                            limits={"drain_timeout": "1s"})
        with h.Keygate(cfg) as kg:
            a = self.open_tunnel(kg, soon, "expiring")
            b = self.open_tunnel(kg, other, "lasting")
            while time.time() < expires - 0.6:
                self.echo(a, b"x")
                time.sleep(0.3)
            remaining = expires - time.time()
            self.assertTrue(a.wait_closed(remaining + 2.0 + 1.0), "tunnel still open after its key expired")
            self.assertGreater(time.time(), expires - 0.3, "tunnel closed before the key expired")
            self.echo(b, b"unaffected")
            self.assertEqual(self.req("GET", "/r", [("X-API-Key", soon)], port=kg.port).status, 401)


if __name__ == "__main__":
    h.main()
