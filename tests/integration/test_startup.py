#!/usr/bin/env python3
"""Fail-closed startup, environment overrides and the command line (DESIGN.md §2, §3, §4)."""
import base64
import hashlib
import json
import os
import shutil
import signal
import socket
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402


class StartupTestCase(h.KeygateTestCase):

    @classmethod
    def setUpClass(cls):
        cls.up = cls.start_upstream()

    def setUp(self):
        self.up.reset()

    def cfg(self, keys=(), environment="production", **overrides):
        return h.make_config(self.up.port, keys=keys, environment=environment, **overrides)

    def run_failing(self, config=None, config_text=None, env=None, listen_port=None, timeout=10):
        """Starts keygate expecting it to exit; returns (exit code, stderr). Fails when it
        keeps running or when anything accepted connections on `listen_port` meanwhile."""
        if listen_port is None and config is not None:
            listen_port = config["listen"]["port"]
        kg = h.Keygate(config, config_text=config_text, env=env, wait_ready=False)
        try:
            kg.start()
            listened = False
            deadline = time.monotonic() + timeout
            while kg.proc.poll() is None and time.monotonic() < deadline:
                if listen_port and h.port_accepts(listen_port):
                    listened = True
                time.sleep(0.01)
            if kg.proc.poll() is None:
                self.fail(f"keygate kept running; stderr:\n{kg.stderr()}")
            self.assertFalse(listened, "keygate accepted connections before failing")
            return kg.proc.returncode, kg.stderr()
        finally:
            kg.stop()
            kg.cleanup()

    def assertStartupError(self, code, stderr, *needles, secrets=()):
        self.assertEqual(code, h.EX_CONFIG, f"exit code {code}, stderr:\n{stderr}")
        lines = [l for l in stderr.splitlines() if l.strip()]
        self.assertTrue(lines, "no message on stderr")
        for l in lines:
            self.assertTrue(l.startswith("keygate: "), f"stderr line without 'keygate: ' prefix: {l!r}")
        for n in needles:
            self.assertIn(n, stderr)
        for s in secrets:
            self.assertNotIn(s, stderr, "a key appears in an error message")

    def assertFails(self, config=None, *needles, config_text=None, env=None, secrets=()):
        code, err = self.run_failing(config, config_text=config_text, env=env)
        self.assertStartupError(code, err, *needles, secrets=secrets)
        return err

    def assertServes(self, kg, headers=(), key_id=None):
        r = self.req("GET", "/probe", list(headers), port=kg.port)
        self.assertEqual(r.status, 200, r)
        u = self.up.wait_requests(1)[-1]
        self.assertEqual(u.header("X-Keygate-Key-Id"), key_id)
        self.up.reset()
        return u


class FailClosedTest(StartupTestCase):

    def test_production_without_keys(self):
        self.assertFails(self.cfg(keys=[]))

    def test_production_without_active_keys(self):
        self.assertFails(self.cfg(keys=[
            h.key_entry("old", key=h.new_key(), expires_at="2020-01-01T00:00:00Z"),
            h.key_entry("off", key=h.new_key(), disabled=True),
            h.key_entry("later", key=h.new_key(), not_before="2099-01-01T00:00:00Z")]))

    def test_default_environment_is_production(self):
        self.assertFails(self.cfg(keys=[], environment=None))

    def test_production_short_plaintext_key(self):
        short = "k" * 10
        self.assertFails(self.cfg(keys=[h.key_entry("short", key=short)]), "auth.keys[0]", secrets=[short])
        k31 = h.new_key(31)
        self.assertFails(self.cfg(keys=[h.key_entry("ok", key=h.new_key()), h.key_entry("s31", key=k31)]),
                         "auth.keys[1]", secrets=[k31])

    def test_production_32_byte_key_is_enough(self):
        key = h.new_key(32)
        with h.Keygate(self.cfg(keys=[h.key_entry("k32", key=key)])) as kg:
            self.assertServes(kg, [("X-API-Key", key)], key_id="k32")

    def test_unknown_field(self):
        cfg = self.cfg(keys=[h.key_entry("a", key=h.new_key())])
        cfg["listen"]["prot"] = 8080
        self.assertFails(cfg, "listen.prot")
        cfg = self.cfg(keys=[h.key_entry("a", key=h.new_key(), scope=["x"])])
        self.assertFails(cfg, "auth.keys[0].scope")
        cfg = self.cfg(keys=[h.key_entry("a", key=h.new_key())], bogus_section={"x": 1})
        self.assertFails(cfg, "bogus_section")

    def test_wrong_type_and_invalid_values(self):
        key = h.new_key()
        cfg = self.cfg(keys=[h.key_entry("a", key=key)], threads="many")
        self.assertFails(cfg, "threads")
        cfg = self.cfg(keys=[h.key_entry("a", key=key)], limits={"header_timeout": "10 seconds"})
        self.assertFails(cfg, "limits.header_timeout")
        cfg = self.cfg(keys=[h.key_entry("a", key=key)],
                       upstream={"url": f"http://127.0.0.1:{self.up.port}/api"})
        self.assertFails(cfg, "upstream.url")
        cfg = self.cfg(keys=[h.key_entry("bad id", key=key)])
        self.assertFails(cfg, "auth.keys[0].id")
        cfg = self.cfg(keys=[h.key_entry("a", key=key)], environment="staging")
        self.assertFails(cfg, "environment")
        cfg = self.cfg(keys=[h.key_entry("a", key=key)],
                       auth={"public_paths": ["/admin/health"],
                             "rules": [{"path": "/admin/*", "scopes": ["admin"]}]})
        self.assertFails(cfg)

    def test_repeated_mapping_key(self):
        port, admin, key = h.free_port(), h.free_port(), h.new_key()
        base = (f"environment: production\n"
                f"listen:\n  address: 127.0.0.1\n  port: {port}\n"
                f"upstream:\n  url: http://127.0.0.1:{self.up.port}\n"
                f"admin:\n  address: 127.0.0.1\n  port: {admin}\n"
                f"auth:\n  keys:\n    - id: a\n      key: {key}\n")
        # Appending `disabled: true` to revoke a key must not be silently ignored.
        code, err = self.run_failing(config_text=base + "      disabled: false\n      disabled: true\n",
                                     listen_port=port)
        self.assertStartupError(code, err, "disabled", secrets=[key])
        code, err = self.run_failing(config_text=base + "threads: 1\nthreads: 2\n", listen_port=port)
        self.assertStartupError(code, err, "threads")
        code, err = self.run_failing(config_text=base.replace(
            f"  port: {port}\n", f"  port: {port}\n  port: {h.free_port()}\n"), listen_port=port)
        self.assertStartupError(code, err, "port")

    def test_unset_variable(self):
        cfg = self.cfg(keys=[h.key_entry("a", key="${IT_KEYGATE_UNSET_VARIABLE_7F3A}")])
        self.assertFails(cfg, "IT_KEYGATE_UNSET_VARIABLE_7F3A")

    def test_variable_substitution(self):
        key = h.new_key()
        cfg = self.cfg(keys=[h.key_entry("a", key="${IT_KEYGATE_SECRET}", labels={"note": "x$${y}"})])
        with h.Keygate(cfg, env={"IT_KEYGATE_SECRET": key}) as kg:
            u = self.assertServes(kg, [("X-API-Key", key)], key_id="a")
            self.assertEqual(u.header("X-Keygate-Label-note"), "x${y}")
            self.assertEqual(self.req("GET", "/p", [("X-API-Key", "${IT_KEYGATE_SECRET}")],
                                      port=kg.port).status, 401)

    def test_time_without_zone(self):
        key = h.new_key()
        self.assertFails(self.cfg(keys=[h.key_entry("a", key=key, expires_at="2030-01-01T00:00:00")]),
                         "auth.keys[0].expires_at")
        self.assertFails(self.cfg(keys=[h.key_entry("a", key=key, not_before="2020-01-01 00:00:00")]),
                         "auth.keys[0].not_before")
        self.assertFails(self.cfg(keys=[h.key_entry("a", key=key, expires_at="2030-02-30T00:00:00Z")]),
                         "auth.keys[0].expires_at")

    def test_times_with_zone_accepted(self):
        key = h.new_key()
        cfg = self.cfg(keys=[h.key_entry("a", key=key, expires_at="2099-01-01T00:00:00+02:00",
                                         not_before="2020-01-01T00:00:00-05:30")])
        with h.Keygate(cfg) as kg:
            self.assertServes(kg, [("X-API-Key", key)], key_id="a")

    def test_port_in_use(self):
        cfg = self.cfg(keys=[h.key_entry("a", key=h.new_key())])
        port = cfg["listen"]["port"]
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", port))
            s.listen(8)
            kg = h.Keygate(cfg, wait_ready=False)
            try:
                kg.start()
                try:
                    code = kg.proc.wait(10)
                except Exception:
                    self.fail(f"keygate kept running while its port is taken; stderr:\n{kg.stderr()}")
                self.assertStartupError(code, kg.stderr())
            finally:
                kg.stop()
                kg.cleanup()

    def test_duplicate_secret_or_id(self):
        key = h.new_key()
        self.assertFails(self.cfg(keys=[h.key_entry("a", key=key), h.key_entry("b", key=key)]), secrets=[key])
        self.assertFails(self.cfg(keys=[h.key_entry("a", key=key), h.key_entry("b", hash=h.key_hash(key))]),
                         secrets=[key])
        self.assertFails(self.cfg(keys=[h.key_entry("a", key=key), h.key_entry("a", key=h.new_key())]))

    def test_missing_keys_file(self):
        cfg = self.cfg(keys=[h.key_entry("a", key=h.new_key())],
                       auth={"keys_file": "/nonexistent/keygate-it/keys.yaml"})
        self.assertFails(cfg, "/nonexistent/keygate-it/keys.yaml")


class EnvironmentTest(StartupTestCase):

    def test_development_without_keys_forwards_everything(self):
        with h.Keygate(self.cfg(keys=[], environment="development")) as kg:
            u = self.assertServes(kg, [("X-Keygate-Key-Id", "forged")], key_id=None)
            self.assertEqual(u.names_with_prefix("X-Keygate-"), [])
            self.assertTrue(kg.stderr().strip(), "no warning that authentication is disabled")

    def test_development_short_key_is_a_warning(self):
        key = "short-key"
        with h.Keygate(self.cfg(keys=[h.key_entry("s", key=key)], environment="development")) as kg:
            self.assertServes(kg, [("X-API-Key", key)], key_id="s")
            r = self.req("GET", "/p", port=kg.port)
            self.assertError(r, 401, "missing_api_key")
            self.assertNotIn(key, kg.stderr())

    def test_keygate_env_overrides_config(self):
        with h.Keygate(self.cfg(keys=[]), env={"KEYGATE_ENV": "development"}) as kg:
            self.assertServes(kg, key_id=None)
        self.assertFails(self.cfg(keys=[], environment="development"), env={"KEYGATE_ENV": "production"})
        self.assertFails(self.cfg(keys=[h.key_entry("a", key=h.new_key())]), env={"KEYGATE_ENV": "staging"})

    def test_keygate_api_keys(self):
        k1, k2 = h.new_key(), h.new_key()[:20] + ":" + h.new_key()[:20]
        env = {"KEYGATE_API_KEYS": f"svc:{k1},other:{k2}"}
        with h.Keygate(self.cfg(keys=[]), env=env) as kg:
            u = self.assertServes(kg, [("X-API-Key", k1)], key_id="svc")
            self.assertFalse(u.has("X-Keygate-Scopes"))
            self.assertServes(kg, [("X-API-Key", k2)], key_id="other")
            self.assertEqual(self.req("GET", "/p", [("X-API-Key", "other:" + k2)], port=kg.port).status, 401)
            for k in (k1, k2):
                self.assertNotIn(k, kg.stdout() + kg.stderr())
        # Added to the configured keys, checked by the same rules.
        inline = h.new_key()
        with h.Keygate(self.cfg(keys=[h.key_entry("inline", key=inline)]), env=env) as kg:
            self.assertServes(kg, [("X-API-Key", inline)], key_id="inline")
            self.assertServes(kg, [("X-API-Key", k1)], key_id="svc")
        self.assertFails(self.cfg(keys=[]), env={"KEYGATE_API_KEYS": "svc:tooshort"}, secrets=["tooshort"])
        self.assertFails(self.cfg(keys=[h.key_entry("inline", key=inline)]),
                         env={"KEYGATE_API_KEYS": f"dup:{inline}"}, secrets=[inline])

    def test_keygate_listen_and_upstream(self):
        key = h.new_key()
        cfg = self.cfg(keys=[h.key_entry("a", key=key)], upstream={"url": f"http://127.0.0.1:{h.free_port()}"})
        other = h.free_port()
        env = {"KEYGATE_LISTEN": f"127.0.0.1:{other}", "KEYGATE_UPSTREAM": f"http://127.0.0.1:{self.up.port}"}
        with h.Keygate(cfg, env=env, port=other) as kg:
            self.assertFalse(h.port_accepts(cfg["listen"]["port"]), "still listening on the config port")
            self.assertServes(kg, [("X-API-Key", key)], key_id="a")

    def test_keygate_config(self):
        key = h.new_key()
        cfg = self.cfg(keys=[h.key_entry("a", key=key)])
        kg = h.Keygate(cfg, use_config_flag=False)
        kg.env["KEYGATE_CONFIG"] = kg.config_path
        with kg:
            self.assertServes(kg, [("X-API-Key", key)], key_id="a")

    def test_keys_file(self):
        key, jkey = h.new_key(), h.new_key()
        cfg = self.cfg(keys=[])
        kg = h.Keygate(cfg)
        yaml_path = os.path.join(kg.tmp, "keys.yaml")
        with open(yaml_path, "w") as f:
            f.write(h.to_yaml({"keys": [h.key_entry("from-file", hash=h.key_hash(key), scopes=["s1"])]}) + "\n")
        kg2 = h.Keygate(self.cfg(keys=[]))
        json_path = os.path.join(kg2.tmp, "keys.json")
        with open(json_path, "w") as f:
            json.dump({"keys": [{"id": "from-json", "key": jkey}]}, f)
        for k, path, key_id, keyval in ((kg, yaml_path, "from-file", key), (kg2, json_path, "from-json", jkey)):
            k.config["auth"]["keys_file"] = path
            with open(k.config_path, "w") as f:
                f.write(h.to_yaml(k.config) + "\n")
            with k:
                self.assertServes(k, [("X-API-Key", keyval)], key_id=key_id)

    def test_keys_file_reloaded_on_change(self):
        tmp = tempfile.mkdtemp(prefix="keygate-it-keys-")
        self.addCleanup(shutil.rmtree, tmp, True)
        path = os.path.join(tmp, "keys.yaml")

        def write(text):
            with open(path + ".new", "w") as f:
                f.write(text)
            os.replace(path + ".new", path)

        a, b = h.new_key(), h.new_key()
        write(h.to_yaml({"keys": [h.key_entry("key-a", key=a)]}) + "\n")
        cfg = self.cfg(keys=[], auth={"keys_file": path, "reload_interval": "250ms"})

        def status(kg, key):
            return self.req("GET", "/r", [("X-API-Key", key)], port=kg.port).status

        def eventually(kg, key, want, within=4.0):
            deadline = time.monotonic() + within
            while time.monotonic() < deadline:
                if status(kg, key) == want:
                    return True
                time.sleep(0.1)
            return False

        with h.Keygate(cfg) as kg:
            self.assertEqual(status(kg, a), 200)
            write(h.to_yaml({"keys": [h.key_entry("key-b", key=b)]}) + "\n")
            self.assertTrue(eventually(kg, b, 200), "new key from the changed keys file not applied")
            self.assertEqual(status(kg, a), 401, "removed key still accepted")
            # A broken file leaves the previous keys in force.
            write("keys:\n  - id: broken\n    key: [unterminated\n")
            time.sleep(1.0)
            self.assertEqual(status(kg, b), 200, "a broken keys file replaced the keys in force")
            # A valid file with no keys is applied: everything needing a key is denied.
            write("keys: []\n")
            self.assertTrue(eventually(kg, b, 401), "an empty keys file was not applied")
            self.assertEqual(self.req("GET", "/healthz", port=kg.port).status, 200)
            for k in (a, b):
                self.assertNotIn(k, kg.stdout() + kg.stderr())

    def test_sigterm_drains_in_flight_exchange(self):
        key = h.new_key()
        with h.Keygate(self.cfg(keys=[h.key_entry("a", key=key)])) as kg:
            idle = h.Client(kg.port)
            self.addCleanup(idle.close)
            self.assertEqual(idle.request("GET", "/idle", [("X-API-Key", key)]).status, 200)
            self.up.reset()
            with h.Client(kg.port, timeout=10) as c:
                c.send(h.build_request("GET", "/slow?ms=1500", [("X-API-Key", key)]))
                self.up.wait_heads(1)
                kg.proc.send_signal(signal.SIGTERM)
                self.assertTrue(idle.wait_closed(1.0), "idle keep-alive connection not closed on SIGTERM")
                self.assertEqual(idle.pending(), b"")
                self.assertFalse(h.port_accepts(kg.port), "still accepting connections while draining")
                r = c.read_response(timeout=5)
                self.assertEqual(r.status, 200, r)
                self.assertTrue(r.has_close(), "in-flight exchange must end with Connection: close")
                self.assertTrue(c.wait_closed(3))
            self.assertEqual(kg.proc.wait(5), 0)

    def test_access_log_off(self):
        key = h.new_key()
        with h.Keygate(self.cfg(keys=[h.key_entry("a", key=key)], logging={"access_log": False})) as kg:
            self.assertServes(kg, [("X-API-Key", key)], key_id="a")
            self.assertEqual(self.req("GET", "/x", port=kg.port).status, 401)
            time.sleep(0.3)
            self.assertEqual(kg.stdout(), "")

    def test_sigterm_exits_zero(self):
        kg = h.Keygate(self.cfg(keys=[h.key_entry("a", key=h.new_key())]))
        with kg:
            self.assertEqual(self.req("GET", "/healthz", port=kg.port).status, 200)
            t0 = time.monotonic()
            code = kg.stop(signal.SIGTERM, grace=8)
            self.assertEqual(code, 0, kg.stderr())
            self.assertLess(time.monotonic() - t0, 5)


class CliTest(StartupTestCase):

    def test_check_config_valid(self):
        plain, hashed = h.new_key(), h.new_key()
        digest = h.key_hash(hashed)
        cfg = self.cfg(keys=[
            h.key_entry("alpha", key=plain, scopes=["orders:read", "orders:write"],
                        expires_at="2099-06-30T00:00:00Z"),
            h.key_entry("beta", hash=digest)])
        kg = h.Keygate(cfg)
        try:
            p = h.run_cli(["check-config", "--config", kg.config_path])
            self.assertEqual(p.returncode, 0, p.stderr)
            for needle in ("alpha", "beta", "orders:read"):
                self.assertIn(needle, p.stdout)
            self.assertIn("2099", p.stdout, "expiry not in the summary")
            out = p.stdout + p.stderr
            self.assertNotIn(plain, out)
            self.assertNotIn(hashed, out)
            self.assertNotIn(digest[7:], out, "a key hash appears in the summary")
            self.assertNotIn(hashlib.sha256(plain.encode()).hexdigest(), out)
            self.assertFalse(h.port_accepts(cfg["listen"]["port"]))
            # KEYGATE_CONFIG works for check-config too.
            p = h.run_cli(["check-config"], env={"KEYGATE_CONFIG": kg.config_path})
            self.assertEqual(p.returncode, 0, p.stderr)
        finally:
            kg.cleanup()

    def test_check_config_invalid(self):
        cfg = self.cfg(keys=[h.key_entry("a", key=h.new_key(), expires_at="2030-01-01T00:00:00")])
        kg = h.Keygate(cfg)
        try:
            p = h.run_cli(["check-config", "--config", kg.config_path])
            self.assertStartupError(p.returncode, p.stderr, "auth.keys[0].expires_at")
            p = h.run_cli(["check-config", "--config", os.path.join(kg.tmp, "missing.yaml")])
            self.assertStartupError(p.returncode, p.stderr)
        finally:
            kg.cleanup()

    def test_hash_key(self):
        expected = "sha256:" + hashlib.sha256(b"secret").hexdigest()
        for stdin in (b"secret\n", b"secret"):
            p = h.run_cli(["hash-key"], input=stdin)
            self.assertEqual(p.returncode, 0, p.stderr)
            self.assertEqual(p.stdout.strip(), expected)
            self.assertRegex(p.stdout, r"^sha256:[0-9a-f]{64}\n?$")
        p = h.run_cli(["hash-key"], input=b"secret\n\n")
        self.assertEqual(p.stdout.strip(), "sha256:" + hashlib.sha256(b"secret\n").hexdigest())

    def test_gen_key(self):
        outs = set()
        for _ in range(2):
            p = h.run_cli(["gen-key"])
            self.assertEqual(p.returncode, 0, p.stderr)
            key = p.stdout.strip()
            self.assertRegex(p.stdout, r"^[A-Za-z0-9_-]{43}\n?$")
            self.assertEqual(len(base64.urlsafe_b64decode(key + "=")), 32)
            outs.add(key)
        self.assertEqual(len(outs), 2, "gen-key repeated itself")

    def test_version(self):
        p = h.run_cli(["--version"])
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertRegex(p.stdout, r"^keygate [0-9]+\.[0-9]+\.[0-9]+\S*\n?$")

    def test_help(self):
        p = h.run_cli(["--help"])
        self.assertEqual(p.returncode, 0, p.stderr)
        for cmd in ("check-config", "hash-key", "gen-key", "--config", "--version"):
            self.assertIn(cmd, p.stdout + p.stderr)


if __name__ == "__main__":
    h.main()
