#!/usr/bin/env python3
"""Key lifecycle: the keys file at runtime (DESIGN.md §2 "At runtime", §3 keys_file and
reload_interval, §5 SIGHUP and the admin listener, §1.7 rate-limit buckets across reloads).

Every keygate here reads a keys file in its own temporary directory; files are replaced
by an atomic rename (as an operator or the kubelet does), never rewritten in place."""
import json
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

METRIC_RE = re.compile(r'^keygate_key_reloads_total\{result="(success|failure)"\}\s+([0-9.eE+]+)\s*$',
                       re.MULTILINE)


class ReloadTestCase(h.KeygateTestCase):

    @classmethod
    def setUpClass(cls):
        cls.up = cls.start_upstream()

    def setUp(self):
        self.up.reset()
        self.dir = tempfile.mkdtemp(prefix="keygate-it-reload-")
        self.addCleanup(shutil.rmtree, self.dir, True)

    # ----------------------------------------------------------------- files

    def write_atomic(self, path, text):
        """Writes `text` to a temporary name in the same directory, then renames it over
        `path` (readers see the old or the new content, never a mix)."""
        tmp = path + ".tmp-" + str(time.monotonic_ns())
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, path)

    @staticmethod
    def yaml_keys(entries):
        return "keys: []\n" if not entries else h.to_yaml({"keys": list(entries)}) + "\n"

    def keys_path(self, name="keys.yaml"):
        return os.path.join(self.dir, name)

    def cfg(self, keys_file, reload_interval="250ms", keys=(), environment="production", **overrides):
        auth = {"keys_file": keys_file, "reload_interval": reload_interval}
        auth.update(overrides.pop("auth", {}))
        return h.make_config(self.up.port, keys=keys, environment=environment, auth=auth, **overrides)

    # ----------------------------------------------------------------- requests

    def status(self, kg, key, path="/r"):
        headers = [] if key is None else [("X-API-Key", key)]
        return self.req("GET", path, headers, port=kg.port).status

    def wait_status(self, kg, key, want, within, path="/r"):
        """Polls with `key` on one keep-alive connection until the answer is `want`; returns
        the seconds that took, or None when `within` passed first."""
        t0 = time.monotonic()
        headers = [] if key is None else [("X-API-Key", key)]
        c = h.Client(kg.port)
        try:
            while True:
                try:
                    st = c.request("GET", path, headers).status
                except (OSError, h.Closed):
                    c.close()
                    c = h.Client(kg.port)
                    st = None
                elapsed = time.monotonic() - t0
                if st == want:
                    return elapsed
                if elapsed > within:
                    return None
                time.sleep(0.02)
        finally:
            c.close()

    def admin(self, kg, path):
        return self.req("GET", path, port=kg.config["admin"]["port"])

    def reload_counts(self, kg):
        """(success, failure) from keygate_key_reloads_total on /metrics."""
        r = self.admin(kg, "/metrics")
        self.assertEqual(r.status, 200, r)
        text = r.body.decode("utf-8", "replace")
        found = {m.group(1): float(m.group(2)) for m in METRIC_RE.finditer(text)}
        self.assertIn("success", found, "no keygate_key_reloads_total{result=\"success\"} series")
        self.assertIn("failure", found, "no keygate_key_reloads_total{result=\"failure\"} series")
        return found["success"], found["failure"]

    # ----------------------------------------------------------------- keygate's own log

    @staticmethod
    def log_lines(kg):
        """keygate's stderr as (level, message) pairs (JSON lines or text)."""
        out = []
        for line in kg.stderr().splitlines():
            line = line.strip()
            if not line:
                continue
            if line.startswith("{"):
                try:
                    obj = json.loads(line)
                    out.append((str(obj.get("level", "")).lower(), str(obj.get("msg", obj.get("message", "")))))
                    continue
                except ValueError:
                    pass
            m = re.search(r"\b(trace|debug|info|warning|warn|error|critical)\b", line, re.I)
            out.append((m.group(1).lower() if m else "", line))
        return out

    def errors(self, kg):
        return [msg for lvl, msg in self.log_lines(kg) if lvl in ("error", "err", "critical")]

    def reload_infos(self, kg):
        return [msg for lvl, msg in self.log_lines(kg) if lvl == "info" and "reload" in msg.lower()]

    def wait_new_reload_info(self, kg, before, within=3.0):
        """The info lines about applied reloads logged after the first `before` ones."""
        deadline = time.monotonic() + within
        while True:
            lines = self.reload_infos(kg)[before:]
            if lines or time.monotonic() > deadline:
                return lines
            time.sleep(0.05)

    def assertReloadLogged(self, kg, before, added=(), removed=(), count=None):
        """A new info line about an applied reload names every added and removed id (and the
        number of keys, when given)."""
        lines = self.wait_new_reload_info(kg, before)
        self.assertTrue(lines, f"no info line for the applied reload; stderr:\n{kg.stderr()}")
        for line in lines:
            if all(i in line for i in (*added, *removed)) and (
                    count is None or re.search(rf"(?<![0-9.]){count}(?![0-9.])", line)):
                return line
        self.fail(f"no reload line naming added {list(added)}, removed {list(removed)}"
                  f"{'' if count is None else f', {count} keys'}: {lines!r}")

    def assertNoSecret(self, kg, *keys):
        text = kg.stderr() + kg.stdout()
        for k in keys:
            self.assertNotIn(k, text, "a key appears in keygate's output")


class FileReloadTest(ReloadTestCase):

    def test_added_key_works_and_removed_key_denied_within_two_intervals(self):
        path = self.keys_path()
        a, b = h.new_key(), h.new_key()
        self.write_atomic(path, self.yaml_keys([h.key_entry("key-a", hash=h.key_hash(a))]))
        interval = 0.25
        with h.Keygate(self.cfg(path, reload_interval="250ms")) as kg:
            self.assertEqual(self.status(kg, a), 200)
            self.assertEqual(self.status(kg, b), 401)
            ok0, _ = self.reload_counts(kg)
            n = len(self.reload_infos(kg))

            self.write_atomic(path, self.yaml_keys([h.key_entry("key-a", hash=h.key_hash(a)),
                                                    h.key_entry("key-b", key=b, scopes=["s1"])]))
            took = self.wait_status(kg, b, 200, within=3.0)
            self.assertIsNotNone(took, "a key added to the keys file never worked")
            self.assertLessEqual(took, 2 * interval, f"added key worked only after {took:.3f} s")
            u = self.up.wait_requests(1)[-1]
            self.assertEqual(u.header("X-Keygate-Key-Id"), "key-b")
            self.assertEqual(u.header("X-Keygate-Scopes"), "s1")
            self.assertEqual(self.status(kg, a), 200, "a key kept in the file stopped working")
            self.assertReloadLogged(kg, n, added=["key-b"], count=2)
            n = len(self.reload_infos(kg))

            self.write_atomic(path, self.yaml_keys([h.key_entry("key-b", key=b, scopes=["s1"])]))
            took = self.wait_status(kg, a, 401, within=3.0)
            self.assertIsNotNone(took, "a key removed from the keys file kept working")
            self.assertLessEqual(took, 2 * interval, f"removed key denied only after {took:.3f} s")
            r = self.req("GET", "/r", [("X-API-Key", a)], port=kg.port)
            self.assertError(r, 401, "invalid_api_key")
            self.assertEqual(self.status(kg, b), 200)
            self.assertReloadLogged(kg, n, removed=["key-a"], count=1)

            ok1, _ = self.reload_counts(kg)
            self.assertGreaterEqual(ok1 - ok0, 2, "applied reloads not counted as success")
            self.assertNoSecret(kg, a, b)

    def test_kubernetes_secret_symlink_swap(self):
        # The layout the kubelet gives a mounted Secret: keys.yaml -> ..data/keys.yaml,
        # ..data -> ..<timestamp>; an update makes a new timestamped directory, points a
        # new ..data_tmp symlink at it, renames ..data_tmp over ..data, removes the old one.
        mount = self.dir
        path = os.path.join(mount, "keys.yaml")
        state = {"n": 0, "current": None}

        def publish(text):
            state["n"] += 1
            ts = f"..2026_01_01_00_00_{state['n']:02d}.{time.monotonic_ns() % 10**9:09d}"
            os.mkdir(os.path.join(mount, ts))
            with open(os.path.join(mount, ts, "keys.yaml"), "w") as f:
                f.write(text)
            tmp_link = os.path.join(mount, "..data_tmp")
            os.symlink(ts, tmp_link)
            os.rename(tmp_link, os.path.join(mount, "..data"))
            if state["current"] is not None:
                shutil.rmtree(os.path.join(mount, state["current"]))
            state["current"] = ts

        keys = [h.new_key() for _ in range(3)]
        publish(self.yaml_keys([h.key_entry("gen-0", hash=h.key_hash(keys[0]))]))
        os.symlink("..data/keys.yaml", path)
        self.assertTrue(os.path.islink(path) and os.path.islink(os.path.join(mount, "..data")))
        with h.Keygate(self.cfg(path, reload_interval="200ms")) as kg:
            self.assertEqual(self.status(kg, keys[0]), 200)
            for gen in (1, 2):
                n = len(self.reload_infos(kg))
                publish(self.yaml_keys([h.key_entry(f"gen-{gen}", hash=h.key_hash(keys[gen]))]))
                self.assertIsNotNone(self.wait_status(kg, keys[gen], 200, within=3.0),
                                     f"generation {gen} of the Secret never applied")
                self.assertEqual(self.status(kg, keys[gen - 1]), 401, "previous generation's key still works")
                self.assertReloadLogged(kg, n, added=[f"gen-{gen}"], removed=[f"gen-{gen - 1}"])
            self.assertEqual(self.errors(kg), [], "errors logged during symlink swaps")

    def test_json_keys_file_loads_and_reloads(self):
        path = self.keys_path("keys.json")
        j1, j2 = h.new_key(), h.new_key()
        self.write_atomic(path, json.dumps({"keys": [{"id": "json-1", "hash": h.key_hash(j1)}]}))
        with h.Keygate(self.cfg(path, reload_interval="200ms")) as kg:
            self.assertEqual(self.status(kg, j1), 200)
            self.assertEqual(self.up.wait_requests(1)[-1].header("X-Keygate-Key-Id"), "json-1")
            self.assertEqual(self.status(kg, j2), 401)
            n = len(self.reload_infos(kg))
            self.write_atomic(path, json.dumps({"keys": [
                {"id": "json-2", "hash": h.key_hash(j2), "scopes": ["a", "b"], "labels": {"tenant": "t1"}}]}))
            self.assertIsNotNone(self.wait_status(kg, j2, 200, within=3.0), "JSON keys file change not applied")
            u = self.up.wait_requests(1)[-1]
            self.assertEqual(u.header("X-Keygate-Key-Id"), "json-2")
            self.assertEqual(u.header("X-Keygate-Scopes"), "a,b")
            self.assertEqual(u.header("X-Keygate-Label-tenant"), "t1")
            self.assertEqual(self.status(kg, j1), 401, "key removed from the JSON file still works")
            self.assertReloadLogged(kg, n, added=["json-2"], removed=["json-1"], count=1)
            self.assertNoSecret(kg, j1, j2)


class InvalidFileTest(ReloadTestCase):

    def assertRejected(self, kg, n_errors, failures_before, needles, secrets):
        """Exactly one new error line naming the problem (even after several polls), no
        key in it, and the failure counter grew."""
        deadline = time.monotonic() + 3.0
        while len(self.errors(kg)) <= n_errors and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.8)  # several more polls of the same broken file
        new = self.errors(kg)[n_errors:]
        self.assertEqual(len(new), 1, f"expected one error line, got {new!r}")
        for needle in needles:
            self.assertIn(needle.lower(), new[0].lower(), f"error line does not name the problem: {new[0]!r}")
        for s in secrets:
            self.assertNotIn(s, new[0], "a key appears in the error line")
        _, failures = self.reload_counts(kg)
        self.assertGreater(failures, failures_before, "failed reload not counted")
        return failures

    def test_invalid_files_keep_previous_keys(self):
        path = self.keys_path()
        old, new = h.new_key(), h.new_key()
        other = h.new_key()
        good = self.yaml_keys([h.key_entry("old-key", key=old)])
        self.write_atomic(path, good)
        with h.Keygate(self.cfg(path, reload_interval="150ms")) as kg:
            self.assertEqual(self.status(kg, old), 200)
            self.assertEqual(self.admin(kg, "/readyz").status, 200)
            _, failures = self.reload_counts(kg)
            self.assertEqual(self.errors(kg), [])
            cases = [
                ("bad YAML",
                 f"keys:\n  - id: new-key\n    key: \"{new}\n  - id: [unterminated\n",
                 [path, "yaml"]),
                ("duplicate id",
                 self.yaml_keys([h.key_entry("dup-id", key=new), h.key_entry("dup-id", key=other)]),
                 [path, "dup-id", "duplicate"]),
                ("unknown field",
                 self.yaml_keys([h.key_entry("new-key", key=new, bogus_field_x9=other)]),
                 [path, "bogus_field_x9"]),
            ]
            for name, text, needles in cases:
                with self.subTest(name):
                    n = len(self.errors(kg))
                    self.write_atomic(path, text)
                    failures = self.assertRejected(kg, n, failures, needles, [old, new, other])
                    self.assertEqual(self.status(kg, old), 200, f"{name}: previous key lost")
                    self.assertEqual(self.status(kg, new), 401, f"{name}: key from a rejected file works")
                    self.assertEqual(self.status(kg, other), 401, f"{name}: key from a rejected file works")
                    self.assertEqual(self.admin(kg, "/readyz").status, 200)
            with self.subTest("vanished file"):
                n = len(self.errors(kg))
                os.unlink(path)
                failures = self.assertRejected(kg, n, failures, [path], [old])
                self.assertEqual(self.status(kg, old), 200, "vanished file: previous key lost")
                self.assertEqual(self.admin(kg, "/readyz").status, 200)
            # A good file is applied again after all that.
            self.write_atomic(path, self.yaml_keys([h.key_entry("new-key", key=new)]))
            self.assertIsNotNone(self.wait_status(kg, new, 200, within=3.0), "valid file after failures not applied")
            self.assertEqual(self.status(kg, old), 401)
            self.assertNoSecret(kg, old, new, other)

    def test_same_problem_again_after_a_fix_is_reported_again(self):
        # Broken, fixed, broken again the same way: both breakages are logged and counted.
        path = self.keys_path()
        key = h.new_key()
        good = self.yaml_keys([h.key_entry("steady", key=key)])
        bad = "keys:\n  - id: steady\n    bogus_field_q7: 1\n"
        self.write_atomic(path, good)
        with h.Keygate(self.cfg(path, reload_interval="150ms")) as kg:
            _, failures = self.reload_counts(kg)
            for attempt in (1, 2):
                with self.subTest(f"unknown field, attempt {attempt}"):
                    n = len(self.errors(kg))
                    self.write_atomic(path, bad)
                    failures = self.assertRejected(kg, n, failures, ["bogus_field_q7"], [key])
                self.assertEqual(self.status(kg, key), 200)
                self.write_atomic(path, good)  # back to the content in force
                time.sleep(0.6)
            for attempt in (1, 2):
                with self.subTest(f"vanished, attempt {attempt}"):
                    n = len(self.errors(kg))
                    os.unlink(path)
                    failures = self.assertRejected(kg, n, failures, [path], [key])
                self.write_atomic(path, good)
                time.sleep(0.6)
            self.assertEqual(self.status(kg, key), 200)


class SighupTest(ReloadTestCase):

    def test_sighup_reloads_at_once(self):
        path = self.keys_path()
        a, b = h.new_key(), h.new_key()
        self.write_atomic(path, self.yaml_keys([h.key_entry("hup-a", key=a)]))
        with h.Keygate(self.cfg(path, reload_interval="1h")) as kg:
            self.assertEqual(self.status(kg, a), 200)
            ok0, _ = self.reload_counts(kg)
            n = len(self.reload_infos(kg))
            self.write_atomic(path, self.yaml_keys([h.key_entry("hup-b", key=b)]))
            time.sleep(0.6)
            # Nothing polls for an hour: the change is not seen without the signal.
            self.assertEqual(self.status(kg, b), 401, "changed file applied without SIGHUP")
            self.assertEqual(self.status(kg, a), 200)
            kg.proc.send_signal(signal.SIGHUP)
            took = self.wait_status(kg, b, 200, within=1.0)
            self.assertIsNotNone(took, "SIGHUP did not apply the changed keys file within 1 s")
            self.assertEqual(self.status(kg, a), 401, "key removed before SIGHUP still works")
            self.assertTrue(kg.alive(), "SIGHUP killed keygate")
            self.assertReloadLogged(kg, n, added=["hup-b"], removed=["hup-a"], count=1)
            ok1, _ = self.reload_counts(kg)
            self.assertGreaterEqual(ok1 - ok0, 1)
            self.assertNoSecret(kg, a, b)


class ContinuousReloadTest(ReloadTestCase):

    def test_requests_never_fail_during_reloads(self):
        path = self.keys_path()
        k = h.new_key()
        others = [h.new_key(), h.new_key()]
        versions = [self.yaml_keys([h.key_entry("steady-k", key=k, scopes=["s"]),
                                    h.key_entry(f"other-{i}", key=others[i])]) for i in (0, 1)]
        self.write_atomic(path, versions[0])
        cfg = self.cfg(path, reload_interval="100ms", threads=2, logging={"access_log": False})
        with h.Keygate(cfg) as kg:
            ok0, fail0 = self.reload_counts(kg)
            stop = threading.Event()
            results = [dict(ok=0, bad=[]) for _ in range(4)]

            def client(i):
                c = h.Client(kg.port)
                try:
                    while not stop.is_set():
                        try:
                            r = c.request("GET", f"/c/{i}", [("X-API-Key", k)])
                        except Exception as e:  # a reset or close is a failure too
                            results[i]["bad"].append(repr(e))
                            c.close()
                            c = h.Client(kg.port)
                            continue
                        if r.status == 200:
                            results[i]["ok"] += 1
                        else:
                            results[i]["bad"].append(f"{r.status} {r.body[:100]!r}")
                        if r.has_close():
                            c.close()
                            c = h.Client(kg.port)
                finally:
                    c.close()

            threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(4)]
            for t in threads:
                t.start()
            t_end = time.monotonic() + 5.0
            i = 0
            while time.monotonic() < t_end:
                i += 1
                self.write_atomic(path, versions[i % 2])
                kg.proc.send_signal(signal.SIGHUP)
                time.sleep(0.1)
            stop.set()
            for t in threads:
                t.join(10)
            bad = [b for r in results for b in r["bad"]]
            total = sum(r["ok"] for r in results)
            self.assertEqual(bad, [], f"requests with a key present in every version failed ({total} ok)")
            for n, r in enumerate(results):
                self.assertGreaterEqual(r["ok"], 20, f"client {n} made only {r['ok']} requests")
            ok1, fail1 = self.reload_counts(kg)
            self.assertGreaterEqual(ok1 - ok0, 25, f"only {ok1 - ok0} reloads applied in 5 s")
            self.assertEqual(fail1, fail0, "a valid file was counted as a failed reload")
            # The last version written is the one in force.
            last = i % 2
            self.assertIsNotNone(self.wait_status(kg, others[last], 200, within=2.0))
            self.assertEqual(self.status(kg, others[1 - last]), 401)
            self.assertTrue(kg.alive())


class EmptyKeySetTest(ReloadTestCase):

    def test_empty_file_in_production_denies_and_unreadies(self):
        path = self.keys_path()
        k, k2 = h.new_key(), h.new_key()
        self.write_atomic(path, self.yaml_keys([h.key_entry("only", key=k)]))
        with h.Keygate(self.cfg(path, reload_interval="200ms", keys=[])) as kg:
            self.assertEqual(self.status(kg, k), 200)
            r = self.admin(kg, "/readyz")
            self.assertEqual(r.status, 200, r)
            n = len(self.reload_infos(kg))
            self.write_atomic(path, "keys: []\n")
            self.assertIsNotNone(self.wait_status(kg, k, 401, within=3.0), "empty keys file not applied")
            self.assertReloadLogged(kg, n, removed=["only"], count=0)
            self.up.reset()
            self.assertError(self.req("GET", "/r", [("X-API-Key", k)], port=kg.port), 401, "invalid_api_key")
            self.assertError(self.req("GET", "/r", port=kg.port), 401, "missing_api_key")
            self.assertError(self.req("POST", "/r", [("X-API-Key", h.new_key())], b"x", port=kg.port),
                             401, "invalid_api_key")
            self.assertNothingForwarded()
            r = self.admin(kg, "/readyz")
            self.assertEqual(r.status, 503, r)
            self.assertIn(b"no_keys", r.body)
            self.assertEqual(self.admin(kg, "/healthz").status, 200)
            # Public paths need no key and still pass.
            self.assertEqual(self.status(kg, None, path="/healthz"), 200)
            self.assertTrue(kg.alive())

            self.write_atomic(path, self.yaml_keys([h.key_entry("back", key=k2)]))
            self.assertIsNotNone(self.wait_status(kg, k2, 200, within=3.0), "key added back not applied")
            deadline = time.monotonic() + 2.0
            while self.admin(kg, "/readyz").status != 200 and time.monotonic() < deadline:
                time.sleep(0.05)
            self.assertEqual(self.admin(kg, "/readyz").status, 200, "/readyz not 200 after keys came back")
            self.assertEqual(self.status(kg, k), 401)
            self.assertNoSecret(kg, k, k2)


class RateLimitReloadTest(ReloadTestCase):

    def test_bucket_survives_reload_with_same_id_and_limit(self):
        path = self.keys_path()
        k, o = h.new_key(), h.new_key()
        limited = h.key_entry("limited", key=k, rate_limit={"requests_per_second": 0.1, "burst": 3})
        self.write_atomic(path, self.yaml_keys([limited]))
        with h.Keygate(self.cfg(path, reload_interval="1h")) as kg:
            with h.Client(kg.port) as c:
                for i in range(3):
                    self.assertEqual(c.request("GET", "/b", [("X-API-Key", k)]).status, 200, f"request {i}")
                r = c.request("GET", "/b", [("X-API-Key", k)])
                self.assertError(r, 429, "rate_limited")
                self.assertGreaterEqual(int(r.header("Retry-After")), 1)
            self.write_atomic(path, self.yaml_keys([limited, h.key_entry("other", key=o)]))
            kg.proc.send_signal(signal.SIGHUP)
            self.assertIsNotNone(self.wait_status(kg, o, 200, within=1.0), "reload did not apply")
            r = self.req("GET", "/b", [("X-API-Key", k)], port=kg.port)
            self.assertError(r, 429, "rate_limited")
            self.assertGreaterEqual(int(r.header("Retry-After")), 1)


if __name__ == "__main__":
    h.main()
