#!/usr/bin/env bash
# Check the deployment artefacts (deploy/docker, deploy/docker-compose,
# deploy/kubernetes, helm/keygate) against keygate itself, without Docker, helm
# or a cluster:
#   (a) yamllint on every plain YAML file (not the Helm templates);
#   (b) `keygate check-config` on the config of the compose example, of the
#       Kubernetes ConfigMap (+ the Secret's keys) and of the Helm chart rendered
#       with its default values (+ its Secret), with the variables they need;
#   (c) every port, path, command, flag and variable they use exists in keygate
#       and agrees across the files; the Dockerfile installs the packages of the
#       libraries keygate links; the chart renders (a small Go-template
#       interpreter stands in for helm) with its defaults, its optional parts
#       and the sidecar include of its README;
#   (d) a replay on loopback: the compose legacy command and keygate with the
#       compose environment and config (only the upstream, listen and admin
#       ports moved to free loopback ports): 401 without a key, 200 with one,
#       healthcheck, clean SIGTERM, and exit 78 with a `keygate: ` line when the
#       key variable is unset; then the Kubernetes config with its keys in a
#       kubelet-style Secret directory: ready, a key added by an atomic ..data
#       swap is accepted, /readyz turns 503 on SIGTERM and keygate drains.
#
# Usage: scripts/check-deploy.sh   (KEYGATE=path/to/keygate, default build/keygate)
# Prints one line per check and exits non-zero when any check fails.
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1
repo=$(pwd)

KEYGATE="${KEYGATE:-build/keygate}"
case "$KEYGATE" in /*) ;; *) KEYGATE="$repo/$KEYGATE" ;; esac

passed=0
failed=0
say() { printf 'check-deploy: %s\n' "$*"; }
pass() { passed=$((passed + 1)); printf 'check-deploy: ok    %s\n' "$*"; }
fail() { failed=$((failed + 1)); printf 'check-deploy: FAIL  %s\n' "$*"; }
# expect CONDITION-RESULT MESSAGE [DETAIL]: pass when the first argument is 0.
expect() {
  if [[ "$1" == 0 ]]; then pass "$2"; else fail "$2${3:+: $3}"; fi
}

# --- prerequisites -----------------------------------------------------------
if [[ ! -x "$KEYGATE" ]]; then
  say "keygate binary $KEYGATE not found: build it first (make build), or set KEYGATE"
  exit 1
fi
PY=
for candidate in python3 /usr/bin/python3; do
  if command -v "$candidate" >/dev/null && "$candidate" -c 'import yaml' 2>/dev/null; then
    PY=$candidate
    break
  fi
done
if [[ -z "$PY" ]]; then
  say "no python3 with PyYAML: install python3-yaml (scripts/install-deps.sh does)"
  exit 1
fi
for tool in curl yamllint; do
  if ! command -v "$tool" >/dev/null; then
    say "$tool is missing: run scripts/install-deps.sh"
    exit 1
  fi
done

tmp=$(mktemp -d "${TMPDIR:-/tmp}/check-deploy.XXXXXX")
pids=()
# shellcheck disable=SC2317  # called by the EXIT trap
cleanup() {
  local pid
  for pid in "${pids[@]}"; do
    kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  done
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Work on a copy, so a rebuild of the binary during the run changes nothing.
mkdir "$tmp/bin"
if ! cp "$KEYGATE" "$tmp/bin/keygate" || ! "$tmp/bin/keygate" --version >/dev/null; then
  say "$KEYGATE does not run"
  exit 1
fi
say "checking with $("$tmp/bin/keygate" --version) ($KEYGATE)"
KEYGATE="$tmp/bin/keygate"

helper="$tmp/check_deploy_helper.py"
write_helper() {
  cat >"$helper" <<'PY'
"""Helper of scripts/check-deploy.sh: parses the deployment artefacts, checks them
against each other and against keygate, renders the Helm chart without helm, and
writes the keygate configurations it finds for check-config and the loopback replay.

Prints one line per check: "ok <what>" or "FAIL <what>", and "note <text>".
"""

import copy
import hashlib
import json
import os
import re
import shlex
import sys

import yaml

# --------------------------------------------------------------------------
# Reporting

FAILED = 0


def ok(msg):
    print("ok " + msg, flush=True)


def fail(msg):
    global FAILED
    FAILED += 1
    print("FAIL " + msg, flush=True)


def note(msg):
    print("note " + msg, flush=True)


def check(cond, msg, why=""):
    if cond:
        ok(msg)
    else:
        fail(msg + (": " + why if why else ""))
    return bool(cond)


def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


# --------------------------------------------------------------------------
# keygate configuration facts

DEFAULT_LISTEN_PORT = 8080
DEFAULT_ADMIN_PORT = 9090


def duration_seconds(text):
    """keygate durations: 250ms, 10s, 5m, 1h."""
    m = re.fullmatch(r"(\d+)(ms|s|m|h)", str(text).strip())
    if not m:
        raise ValueError("not a keygate duration: %r" % (text,))
    n = int(m.group(1))
    return {"ms": n / 1000.0, "s": n, "m": n * 60, "h": n * 3600}[m.group(2)]


def compose_duration_seconds(text):
    """Compose durations: 30s, 1m30s, 1h."""
    total = 0.0
    rest = str(text).strip()
    if not re.fullmatch(r"(\d+(us|ms|s|m|h))+", rest):
        raise ValueError("not a compose duration: %r" % (text,))
    for n, unit in re.findall(r"(\d+)(us|ms|s|m|h)", rest):
        total += int(n) * {"us": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}[unit]
    return total


class KeygateConfig:
    def __init__(self, text, where):
        self.text = text
        self.where = where
        self.data = yaml.safe_load(text) or {}
        listen = self.data.get("listen") or {}
        admin = self.data.get("admin") or {}
        limits = self.data.get("limits") or {}
        auth = self.data.get("auth") or {}
        self.environment = self.data.get("environment", "production")
        self.listen_address = listen.get("address", "0.0.0.0")
        self.listen_port = int(listen.get("port", DEFAULT_LISTEN_PORT))
        self.admin_address = admin.get("address", "0.0.0.0")
        self.admin_port = int(admin.get("port", DEFAULT_ADMIN_PORT))
        self.upstream_url = (self.data.get("upstream") or {}).get("url", "http://127.0.0.1:3000")
        self.keys_file = auth.get("keys_file")
        self.drain_delay = duration_seconds(limits.get("drain_delay", "0s"))
        self.drain_timeout = duration_seconds(limits.get("drain_timeout", "25s"))
        self.env_vars = sorted(set(re.findall(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)\}", text)))

    def upstream_host_port(self):
        m = re.fullmatch(r"(https?)://([^/:]+)(?::(\d+))?/?", self.upstream_url)
        if not m:
            return None, None
        port = int(m.group(3)) if m.group(3) else (443 if m.group(1) == "https" else 80)
        return m.group(2), port

    def with_keys_file(self, new_path):
        """The same text with the keys_file value replaced (exactly one occurrence)."""
        count = self.text.count(self.keys_file)
        if count != 1:
            raise ValueError("keys_file %s appears %d times in the config text" % (self.keys_file, count))
        return self.text.replace(self.keys_file, new_path)


def check_common_config(cfg, label):
    check(cfg.environment == "production", "%s: keygate config has environment: production" % label,
          "got %r" % cfg.environment)
    check(cfg.listen_address in ("0.0.0.0", "::"), "%s: listen.address accepts traffic from outside the container"
          % label, "got %r" % cfg.listen_address)


# --------------------------------------------------------------------------
# A small Go text/template interpreter, enough for the chart's templates: the
# actions, trim markers, comments, define/include, if/else/with, variables and
# the Sprig/Helm functions the chart uses. Values behave as in Helm: numbers
# from YAML are float64, a missing map key is nil, a field of nil is an error.

class TemplateError(Exception):
    pass


_NOVAL = object()


def _floats(v):
    if isinstance(v, bool):
        return v
    if isinstance(v, int):
        return float(v)
    if isinstance(v, dict):
        return {k: _floats(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_floats(x) for x in v]
    return v


def _ints(v):
    if isinstance(v, bool):
        return v
    if isinstance(v, float) and v.is_integer():
        return int(v)
    if isinstance(v, dict):
        return {k: _ints(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_ints(x) for x in v]
    return v


def _gostr(v):
    if v is None:
        return ""  # Helm turns "<no value>" into ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        if v.is_integer() and abs(v) < 1e6:
            return str(int(v))
        if v.is_integer():
            mant = ("%.17g" % v).rstrip("0")
            digits = str(int(abs(v))).rstrip("0")
            exp = len(str(int(abs(v)))) - 1
            m = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
            return ("-" if v < 0 else "") + "%se+%02d" % (m, exp) if mant else str(v)
        return repr(v)
    if isinstance(v, (int, str)):
        return str(v)
    if isinstance(v, list):
        return "[" + " ".join(_gostr(x) for x in v) + "]"
    if isinstance(v, dict):
        return "map[" + " ".join("%s:%s" % (k, _gostr(v[k])) for k in sorted(v)) + "]"
    return str(v)


def _truth(v):
    if v is None or v is _NOVAL:
        return False
    if isinstance(v, bool):
        return v
    if isinstance(v, (int, float)):
        return v != 0
    if isinstance(v, (str, list, dict)):
        return len(v) > 0
    return True


def _to_yaml(v):
    v = _ints(v)
    if v is None:
        return "null"
    if not isinstance(v, (dict, list)):
        return yaml.safe_dump(v, default_flow_style=False, width=4096).split("\n...")[0].rstrip("\n")
    return yaml.safe_dump(v, default_flow_style=False, sort_keys=True, width=4096).rstrip("\n")


def _go_quote(s):
    return json.dumps(s)


def _printf(fmt, *args):
    args = list(args)
    out = []
    i = 0
    while i < len(fmt):
        c = fmt[i]
        if c != "%":
            out.append(c)
            i += 1
            continue
        verb = fmt[i + 1]
        i += 2
        if verb == "%":
            out.append("%")
            continue
        if not args:
            out.append("%!" + verb + "(MISSING)")
            continue
        a = args.pop(0)
        if verb in "sv":
            out.append(_gostr(a))
        elif verb == "d":
            out.append(str(int(a)))
        elif verb == "q":
            out.append(_go_quote(_gostr(a)))
        else:
            raise TemplateError("printf verb %%%s not supported by this checker" % verb)
    return "".join(out)


def _cmp_ok(a, b):
    num = (int, float)
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool)
    if isinstance(a, num) and isinstance(b, num):
        if type(a) is not type(b):
            raise TemplateError("incompatible types for comparison (%r, %r)" % (a, b))
        return True
    return True


def _eq(a, *bs):
    for b in bs:
        _cmp_ok(a, b)
        if a == b:
            return True
    return False


def _from_yaml(s):
    try:
        v = yaml.safe_load(s)
    except yaml.YAMLError as e:
        return {"Error": str(e)}
    if v is None:
        return {}
    if not isinstance(v, dict):
        return {"Error": "not a map"}
    return _floats(v)


def _dig(*args):
    *keys, default, d = args
    cur = d
    for k in keys:
        if isinstance(cur, dict) and k in cur:
            cur = cur[k]
        else:
            return default
    return cur


def _to_int(v):
    if v is None:
        return 0
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, (int, float)):
        return int(v)
    try:
        return int(str(v).strip())
    except ValueError:
        return 0


def _empty(v):
    return not _truth(v)


def _fail(msg):
    raise TemplateError("fail: " + _gostr(msg))


def _required(msg, v):
    if v is None or (isinstance(v, str) and v == ""):
        raise TemplateError("required: " + _gostr(msg))
    return v


def _dict(*kv):
    if len(kv) % 2:
        raise TemplateError("dict needs key/value pairs")
    return {str(kv[i]): kv[i + 1] for i in range(0, len(kv), 2)}


def _and(*a):
    for x in a:
        if not _truth(x):
            return x
    return a[-1]


def _or(*a):
    for x in a:
        if _truth(x):
            return x
    return a[-1]


_TOKEN = re.compile(r"""\s*(?:
    (?P<str>"(?:[^"\\]|\\.)*") |
    (?P<raw>`[^`]*`) |
    (?P<decl>:=) |
    (?P<lp>\() | (?P<rp>\)) | (?P<pipe>\|) |
    (?P<num>-?\d+(?:\.\d+)?) |
    (?P<var>\$[A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)*) |
    (?P<field>(?:\.[A-Za-z0-9_]+)+|\.) |
    (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
    )""", re.X)


def _tokenize(src):
    toks = []
    pos = 0
    src = src.strip()
    while pos < len(src):
        m = _TOKEN.match(src, pos)
        if not m or m.end() == pos:
            raise TemplateError("cannot read %r" % src[pos:])
        pos = m.end()
        kind = m.lastgroup
        text = m.group(kind)
        if kind == "str":
            toks.append(("lit", json.loads(text)))
        elif kind == "raw":
            toks.append(("lit", text[1:-1]))
        elif kind == "num":
            toks.append(("lit", float(text) if "." in text else int(text)))
        else:
            toks.append((kind, text))
    return toks


def _parse_pipeline(toks):
    """toks -> (declared variable or None, [command]); command = [operand]."""
    decl = None
    if len(toks) >= 2 and toks[0][0] == "var" and toks[1][0] == "decl":
        decl = toks[0][1]
        toks = toks[2:]
    cmds = [[]]
    i = 0
    while i < len(toks):
        kind, text = toks[i]
        if kind == "pipe":
            cmds.append([])
            i += 1
        elif kind == "lp":
            depth = 1
            j = i + 1
            while j < len(toks) and depth:
                if toks[j][0] == "lp":
                    depth += 1
                elif toks[j][0] == "rp":
                    depth -= 1
                j += 1
            if depth:
                raise TemplateError("unclosed (")
            cmds[-1].append(("sub", _parse_pipeline(toks[i + 1:j - 1])))
            i = j
        elif kind == "rp":
            raise TemplateError("unexpected )")
        else:
            cmds[-1].append((kind, text))
            i += 1
    if any(not c for c in cmds):
        raise TemplateError("empty command in pipeline")
    return decl, cmds


def _lex(src, name):
    """Split into ("text", s) and ("action", content) items, applying trim markers."""
    items = []
    pos = 0
    while True:
        j = src.find("{{", pos)
        if j < 0:
            items.append(["text", src[pos:]])
            break
        items.append(["text", src[pos:j]])
        k = j + 2
        ltrim = src[k] == "-" and k + 1 < len(src) and src[k + 1] in " \t\r\n"
        if ltrim:
            k += 1
        m = k
        while src[m] in " \t\r\n":
            m += 1
        if src.startswith("/*", m):
            end = src.find("*/", m + 2)
            if end < 0:
                raise TemplateError("%s: unclosed comment" % name)
            e = end + 2
            rtrim = False
            if src.startswith(" -}}", e):
                rtrim = True
                e += 4
            elif src.startswith("}}", e):
                e += 2
            else:
                raise TemplateError("%s: comment ends without }}" % name)
            items.append(["comment", "", ltrim, rtrim])
            pos = e
            continue
        e = k
        in_str = None
        while e < len(src):
            c = src[e]
            if in_str:
                if c == "\\" and in_str == '"':
                    e += 2
                    continue
                if c == in_str:
                    in_str = None
            elif c in "\"`":
                in_str = c
            elif src.startswith("}}", e):
                break
            e += 1
        else:
            raise TemplateError("%s: unclosed action" % name)
        content = src[k:e]
        rtrim = False
        if re.search(r"[ \t\r\n]-$", content):
            rtrim = True
            content = content[:-1]
        items.append(["action", content, ltrim, rtrim])
        pos = e + 2
    for idx, it in enumerate(items):
        if it[0] == "text":
            continue
        if it[2] and idx > 0 and items[idx - 1][0] == "text":
            items[idx - 1][1] = items[idx - 1][1].rstrip(" \t\r\n")
        if it[3] and idx + 1 < len(items) and items[idx + 1][0] == "text":
            items[idx + 1][1] = items[idx + 1][1].lstrip(" \t\r\n")
    return items


class Templates:
    def __init__(self):
        self.defines = {}
        self.files = {}

    def add(self, name, src):
        items = _lex(src, name)
        root = []
        stack = [("root", root, None)]
        for it in items:
            kind = it[0]
            if kind == "text":
                if it[1]:
                    stack[-1][1].append(("text", it[1]))
                continue
            if kind == "comment":
                continue
            toks = _tokenize(it[1])
            if not toks:
                raise TemplateError("%s: empty action" % name)
            head = toks[0]
            word = head[1] if head[0] == "ident" else None
            if word in ("if", "with"):
                node = {"kind": word, "pipe": _parse_pipeline(toks[1:]), "then": [], "else": None}
                stack[-1][1].append(node)
                stack.append((word, node["then"], node))
            elif word == "define":
                if len(stack) != 1 or len(toks) != 2 or toks[1][0] != "lit":
                    raise TemplateError("%s: bad define" % name)
                body = []
                self.defines[toks[1][1]] = body
                stack.append(("define", body, None))
            elif word == "else":
                if len(toks) != 1:
                    raise TemplateError("%s: `else %s` is not supported by this checker" % (name, toks[1][1]))
                top = stack[-1]
                if top[0] not in ("if", "with") or top[2]["else"] is not None:
                    raise TemplateError("%s: else without if/with" % name)
                top[2]["else"] = []
                stack[-1] = (top[0], top[2]["else"], top[2])
            elif word == "end":
                if len(stack) == 1:
                    raise TemplateError("%s: end without a block" % name)
                stack.pop()
            elif word in ("range", "template", "block", "break", "continue"):
                raise TemplateError("%s: `%s` is not supported by this checker" % (name, word))
            else:
                stack[-1][1].append(("action", _parse_pipeline(toks)))
        if len(stack) != 1:
            raise TemplateError("%s: unclosed %s" % (name, stack[-1][0]))
        self.files[name] = root

    # ---- evaluation

    def _field(self, obj, names, what):
        for n in names:
            if obj is None:
                raise TemplateError("nil pointer evaluating interface {}.%s (in %s)" % (n, what))
            if not isinstance(obj, dict):
                raise TemplateError("can't evaluate field %s in %s" % (n, what))
            obj = obj.get(n)
        return obj

    def _operand(self, op, dot, scope):
        kind, text = op
        if kind == "lit":
            return text
        if kind == "field":
            if text == ".":
                return dot
            return self._field(dot, text[1:].split("."), text)
        if kind == "var":
            parts = text.split(".")
            if parts[0] not in scope:
                raise TemplateError("undefined variable %s" % parts[0])
            return self._field(scope[parts[0]], parts[1:], text)
        if kind == "sub":
            return self._pipeline(text, dot, scope)
        if kind == "ident":
            if text == "true":
                return True
            if text == "false":
                return False
            if text == "nil":
                return None
            return self._call(text, [], dot, scope)
        raise TemplateError("unexpected %s %r" % (kind, text))

    def _call(self, name, args, dot, scope):
        funcs = {
            "include": lambda n, ctx: self.include(n, ctx),
            "toYaml": _to_yaml,
            "nindent": lambda n, s: "\n" + " " * n + _gostr(s).replace("\n", "\n" + " " * n),
            "indent": lambda n, s: " " * n + _gostr(s).replace("\n", "\n" + " " * n),
            "quote": lambda *a: " ".join(_go_quote(_gostr(x)) for x in a if x is not None),
            "default": lambda d, *given: given[0] if given and not _empty(given[0]) else d,
            "printf": _printf,
            "trunc": lambda n, s: _gostr(s)[:n] if n >= 0 else _gostr(s)[n:],
            "trimSuffix": lambda suf, s: _gostr(s)[:-len(suf)] if suf and _gostr(s).endswith(suf) else _gostr(s),
            "contains": lambda sub, s: _gostr(sub) in _gostr(s),
            "replace": lambda old, new, s: _gostr(s).replace(old, new),
            "sha256sum": lambda s: hashlib.sha256(_gostr(s).encode()).hexdigest(),
            "not": lambda v: not _truth(v),
            "and": _and,
            "or": _or,
            "eq": _eq,
            "ne": lambda a, b: not _eq(a, b),
            "fromYaml": _from_yaml,
            "hasKey": lambda d, k: isinstance(d, dict) and k in d,
            "get": lambda d, k: d.get(k, "") if isinstance(d, dict) else "",
            "dig": _dig,
            "int": _to_int,
            "empty": _empty,
            "fail": _fail,
            "required": _required,
            "dict": _dict,
            "toString": _gostr,
        }
        if name not in funcs:
            raise TemplateError("function %s is not known to this checker" % name)
        try:
            return funcs[name](*args)
        except TypeError as e:
            raise TemplateError("wrong arguments to %s: %s" % (name, e))

    def _pipeline(self, pipe, dot, scope):
        decl, cmds = pipe
        val = _NOVAL
        for cmd in cmds:
            first = cmd[0]
            if first[0] == "ident" and first[1] not in ("true", "false", "nil"):
                args = [self._operand(op, dot, scope) for op in cmd[1:]]
                if val is not _NOVAL:
                    args.append(val)
                val = self._call(first[1], args, dot, scope)
            else:
                if len(cmd) > 1 or val is not _NOVAL:
                    raise TemplateError("can't give arguments to a non-function %r" % (first[1],))
                val = self._operand(first, dot, scope)
        if decl:
            scope[decl] = val
            return _NOVAL
        return val

    def _exec(self, nodes, dot, scope):
        out = []
        for node in nodes:
            if isinstance(node, tuple):
                if node[0] == "text":
                    out.append(node[1])
                else:
                    v = self._pipeline(node[1], dot, scope)
                    if v is not _NOVAL:
                        out.append(_gostr(v))
                continue
            v = self._pipeline(node["pipe"], dot, scope)
            inner = dict(scope)
            if _truth(v):
                out.append(self._exec(node["then"], v if node["kind"] == "with" else dot, inner))
            elif node["else"] is not None:
                out.append(self._exec(node["else"], dot, inner))
        return "".join(out)

    def include(self, name, ctx):
        if name not in self.defines:
            raise TemplateError("no template %r" % name)
        return self._exec(self.defines[name], ctx, {"$": ctx})

    def render(self, name, ctx):
        return self._exec(self.files[name], ctx, {"$": ctx})


def deep_merge(base, over):
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


class Chart:
    def __init__(self, path):
        self.path = path
        self.meta = yaml.safe_load(read(os.path.join(path, "Chart.yaml")))
        self.values_text = read(os.path.join(path, "values.yaml"))
        self.values = yaml.safe_load(self.values_text)
        self.templates = Templates()
        tdir = os.path.join(path, "templates")
        self.names = sorted(os.listdir(tdir))
        for n in self.names:
            self.templates.add(n, read(os.path.join(tdir, n)))

    def context(self, overrides=None, release="demo", namespace="apps"):
        values = deep_merge(self.values, overrides or {})
        return {
            "Values": _floats(values),
            "Release": {"Name": release, "Namespace": namespace, "Service": "Helm",
                        "IsInstall": True, "IsUpgrade": False, "Revision": 1},
            "Chart": {"Name": self.meta["name"], "Version": self.meta["version"],
                      "AppVersion": self.meta.get("appVersion", "")},
            "Capabilities": {"APIVersions": []},
            "Template": {"BasePath": "keygate/templates"},
        }

    def render(self, overrides=None):
        """Returns (list of manifests, NOTES text)."""
        ctx = self.context(overrides)
        docs = []
        notes = ""
        for n in self.names:
            if n.startswith("_"):
                continue
            ctx["Template"]["Name"] = "keygate/templates/" + n
            text = self.templates.render(n, ctx)
            if n == "NOTES.txt":
                notes = text
                continue
            for doc in yaml.safe_load_all(text):
                if doc:
                    docs.append(doc)
        return docs, notes


# --------------------------------------------------------------------------
# Checks of a pod spec running keygate as a sidecar (kustomize base and chart)

def by_kind(docs, kind):
    return [d for d in docs if d.get("kind") == kind]


def resolve_port(container, port):
    if isinstance(port, int):
        return port
    for p in container.get("ports", []) or []:
        if p.get("name") == port:
            return p.get("containerPort")
    return None


def check_workload(label, docs, cfg_keys_loader=None):
    """Checks a Deployment + Service + ConfigMap + Secret set; returns (config text, keys text)."""
    deps = by_kind(docs, "Deployment")
    if not check(len(deps) == 1, "%s: one Deployment" % label, "found %d" % len(deps)):
        return None, None
    dep = deps[0]
    pod = dep["spec"]["template"]
    spec = pod["spec"]
    containers = spec.get("containers", [])
    kg = [c for c in containers if c.get("name") == "keygate"]
    if not check(len(kg) == 1, "%s: a container named keygate" % label):
        return None, None
    kg = kg[0]
    apps = [c for c in containers if c is not kg]
    volumes = {v["name"]: v for v in spec.get("volumes", []) or []}
    mounts = {m["name"]: m for m in kg.get("volumeMounts", []) or []}

    # Which ConfigMap holds the config: the volume mounted at dirname(KEYGATE_CONFIG).
    env = {e["name"]: e.get("value") for e in kg.get("env", []) or []}
    args = kg.get("args", []) or []
    config_path = env.get("KEYGATE_CONFIG")
    if "--config" in args:
        config_path = args[args.index("--config") + 1]
    if not check(bool(config_path), "%s: keygate is told where its config is (KEYGATE_CONFIG or --config)" % label):
        return None, None
    cfg_dir, cfg_file = os.path.split(config_path)
    cfg_mount = [m for m in mounts.values() if m["mountPath"].rstrip("/") == cfg_dir]
    if not check(len(cfg_mount) == 1, "%s: %s is inside a mounted volume" % (label, config_path)):
        return None, None
    cfg_vol = volumes.get(cfg_mount[0]["name"], {})
    cm_name = (cfg_vol.get("configMap") or {}).get("name")
    cms = [d for d in by_kind(docs, "ConfigMap") if d["metadata"]["name"] == cm_name]
    if not check(len(cms) == 1 and cfg_file in (cms[0].get("data") or {}),
                 "%s: ConfigMap %s holds %s" % (label, cm_name, cfg_file)):
        return None, None
    config_text = cms[0]["data"][cfg_file]
    cfg = KeygateConfig(config_text, label)
    check_common_config(cfg, label)
    check(cfg.admin_address in ("0.0.0.0", "::"),
          "%s: admin.address is reachable by the kubelet's probes (pod IP)" % label, "got %r" % cfg.admin_address)

    # Keys: keys_file inside the Secret's directory mount, not a subPath.
    keys_text = None
    if check(bool(cfg.keys_file), "%s: the config reads its keys from keys_file" % label):
        kdir, kfile = os.path.split(cfg.keys_file)
        kmount = [m for m in mounts.values() if m["mountPath"].rstrip("/") == kdir]
        if check(len(kmount) == 1, "%s: keys_file %s is inside a mounted volume" % (label, cfg.keys_file)):
            check("subPath" not in kmount[0] and "subPathExpr" not in kmount[0],
                  "%s: the keys volume is a directory mount, not subPath (atomic Secret updates)" % label)
            check(kmount[0].get("readOnly") is True, "%s: the keys volume is mounted read-only" % label)
            kvol = volumes.get(kmount[0]["name"], {})
            secret_name = (kvol.get("secret") or {}).get("secretName")
            check(bool(secret_name), "%s: keys volume is a Secret" % label)
            secrets = [d for d in by_kind(docs, "Secret") if d["metadata"]["name"] == secret_name]
            if secrets:
                data = secrets[0].get("stringData") or {}
                if check(kfile in data, "%s: Secret %s has stringData %s" % (label, secret_name, kfile)):
                    keys_text = data[kfile]
                    check("sha256:" in keys_text, "%s: the example keys are stored as sha256: hashes" % label)
            elif cfg_keys_loader is None:
                fail("%s: Secret %s is not among the manifests" % (label, secret_name))
            else:
                keys_text = cfg_keys_loader(secret_name)

    # Ports and probes.
    ports = {p.get("name"): p.get("containerPort") for p in kg.get("ports", []) or []}
    container_ports = sorted(ports.values())
    check(container_ports == sorted([cfg.listen_port, cfg.admin_port]),
          "%s: keygate's container ports are listen.port and admin.port (%d, %d)"
          % (label, cfg.listen_port, cfg.admin_port), "got %s" % container_ports)
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        p = kg.get(probe) or {}
        get = p.get("httpGet") or {}
        check(get.get("path") == path and resolve_port(kg, get.get("port")) == cfg.admin_port,
              "%s: %s is httpGet %s on the admin port %d" % (label, probe, path, cfg.admin_port),
              "got %s" % get)
    check(bool((kg.get("resources") or {}).get("requests")) and bool((kg.get("resources") or {}).get("limits")),
          "%s: keygate has resource requests and limits" % label)

    # Security.
    psc = spec.get("securityContext") or {}
    csc = kg.get("securityContext") or {}

    def sc(key):
        return csc.get(key, psc.get(key))

    check(sc("runAsNonRoot") is True and sc("runAsUser") == 65532,
          "%s: keygate runs as non-root uid 65532" % label)
    check(csc.get("readOnlyRootFilesystem") is True, "%s: keygate has a read-only root filesystem" % label)
    check(csc.get("allowPrivilegeEscalation") is False, "%s: keygate cannot escalate privileges" % label)
    check("ALL" in ((csc.get("capabilities") or {}).get("drop") or []), "%s: keygate drops ALL capabilities" % label)
    check((sc("seccompProfile") or {}).get("type") == "RuntimeDefault", "%s: seccompProfile RuntimeDefault" % label)

    # Drain and grace.
    grace = spec.get("terminationGracePeriodSeconds", 30)
    need = cfg.drain_delay + cfg.drain_timeout
    check(grace >= need + 5,
          "%s: terminationGracePeriodSeconds %s >= drain_delay + drain_timeout (%gs) + 5s margin"
          % (label, grace, need))
    check(cfg.drain_delay > 0, "%s: drain_delay > 0 so endpoints are removed before the listener closes" % label)

    # Prometheus annotations.
    ann = pod.get("metadata", {}).get("annotations") or {}
    check(ann.get("prometheus.io/scrape") == "true" and ann.get("prometheus.io/port") == str(cfg.admin_port)
          and ann.get("prometheus.io/path") == "/metrics",
          "%s: pod has prometheus.io scrape annotations for :%d/metrics" % (label, cfg.admin_port),
          "got %s" % ann)

    # The app: on loopback, at upstream.url, kept up while keygate drains.
    host, port = cfg.upstream_host_port()
    check(host in ("127.0.0.1", "localhost", "::1"),
          "%s: upstream.url is on the pod's loopback" % label, "got %s" % cfg.upstream_url)
    for app in apps:
        listen_args = [a for a in (app.get("args") or []) if str(a).startswith("-listen=")]
        if listen_args:
            check(listen_args[0] == "-listen=%s:%d" % (host, port),
                  "%s: app %s listens on %s:%d (upstream.url)" % (label, app["name"], host, port),
                  "got %s" % listen_args[0])
        check(not app.get("ports"), "%s: app %s declares no container port (only keygate is exposed)"
              % (label, app["name"]))
        sleep = (((app.get("lifecycle") or {}).get("preStop") or {}).get("sleep") or {}).get("seconds")
        check(sleep is not None and need <= sleep < grace,
              "%s: app %s stays up while keygate drains (preStop sleep %s: >= %gs, < grace %s)"
              % (label, app["name"], sleep, need, grace))
        asc = app.get("securityContext") or {}
        check(asc.get("readOnlyRootFilesystem") is True and asc.get("allowPrivilegeEscalation") is False,
              "%s: app %s is locked down too (read-only root, no escalation)" % (label, app["name"]))

    # Service: keygate's proxy port only.
    svcs = [s for s in by_kind(docs, "Service")
            if all(pod["metadata"]["labels"].get(k) == v for k, v in (s["spec"].get("selector") or {}).items())
            and s["spec"].get("selector")]
    main = [s for s in svcs if (s["metadata"].get("labels") or {}).get("app.kubernetes.io/component") != "metrics"]
    if check(len(main) == 1, "%s: one Service selects the pods" % label):
        sports = main[0]["spec"].get("ports") or []
        targets = [resolve_port(kg, p.get("targetPort", p.get("port"))) for p in sports]
        check(targets == [cfg.listen_port], "%s: the Service targets keygate's listen.port %d only"
              % (label, cfg.listen_port), "targets %s" % targets)
    selector = dep["spec"]["selector"]["matchLabels"]
    check(all(pod["metadata"]["labels"].get(k) == v for k, v in selector.items()),
          "%s: the Deployment's selector matches its pod labels" % label)
    return config_text, keys_text


# --------------------------------------------------------------------------
# Artefact checks

def dockerfile_instructions(text):
    joined = re.sub(r"\\\n", " ", text)
    out = []
    for line in joined.split("\n"):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        word, _, rest = s.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def apt_packages(run):
    pkgs = []
    for m in re.finditer(r"apt-get install ([^&]*)", run):
        pkgs += [w for w in m.group(1).split() if not w.startswith("-")]
    return pkgs


def check_docker(repo, helpwords, libpkgs):
    label = "docker"
    path = os.path.join(repo, "deploy/docker/Dockerfile")
    ins = dockerfile_instructions(read(path))
    args = {}
    stages = []
    for word, rest in ins:
        if word == "ARG" and not stages:
            k, _, v = rest.partition("=")
            args[k] = v
        if word == "FROM":
            image = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), ""), rest.split()[0])
            stages.append({"image": image, "ins": []})
        elif stages:
            stages[-1]["ins"].append((word, rest))
    check([s["image"] for s in stages] == ["debian:bookworm", "debian:bookworm-slim"],
          "%s: two stages, debian:bookworm then debian:bookworm-slim" % label,
          "got %s" % [s["image"] for s in stages])
    if len(stages) != 2:
        return {}
    build, run = stages
    build_runs = " ".join(r for w, r in build["ins"] if w == "RUN")
    run_runs = " ".join(r for w, r in run["ins"] if w == "RUN")

    deps_text = read(os.path.join(repo, "scripts/install-deps.sh"))
    m = re.search(r"packages=\(\n(.*?)\n\)", deps_text, re.S)
    dev_list = m.group(1).split() if m else []
    build_pkgs = apt_packages(build_runs)
    check(build_pkgs and set(build_pkgs) <= set(dev_list),
          "%s: build stage installs only packages of scripts/install-deps.sh" % label,
          "not there: %s" % sorted(set(build_pkgs) - set(dev_list)))
    check("-DBUILD_TESTING=OFF" in build_runs and "-DCMAKE_BUILD_TYPE=Release" in build_runs,
          "%s: CMake Release build without tests" % label)

    runtime_pkgs = set(apt_packages(run_runs))
    base = {"libc6", "libgcc-s1", "libstdc++6"}  # in debian:bookworm-slim already (apt needs them)
    if libpkgs:
        missing = sorted(set(libpkgs) - runtime_pkgs - base)
        check(not missing, "%s: runtime stage installs the package of every library keygate links (%s)"
              % (label, ", ".join(sorted(set(libpkgs) - base))), "missing %s" % missing)
        extra = sorted(runtime_pkgs - set(libpkgs) - {"ca-certificates"})
        check(not extra, "%s: runtime stage installs nothing keygate does not link" % label, "extra %s" % extra)
    else:
        note("%s: ldd/dpkg unavailable: runtime libraries not compared" % label)
    check("ca-certificates" in runtime_pkgs, "%s: runtime has ca-certificates (upstream TLS)" % label)
    check(not re.search(r"\b(g\+\+|cmake|-dev)\b", run_runs), "%s: no compiler or -dev package at runtime" % label)

    def last(word, stage=run):
        vals = [r for w, r in stage["ins"] if w == word]
        return vals[-1] if vals else None

    check(last("USER") == "65532:65532", "%s: runs as USER 65532:65532" % label, "got %s" % last("USER"))
    check("--uid 65532" in run_runs and "--gid 65532" in run_runs, "%s: user keygate is uid/gid 65532" % label)
    copies = [r for w, r in run["ins"] if w == "COPY"]
    binary = None
    for c in copies:
        parts = c.split()
        if parts[0].startswith("--from=") and parts[1].endswith("/keygate"):
            binary = parts[2]
    check(binary == "/usr/local/bin/keygate", "%s: binary at /usr/local/bin/keygate" % label)
    hc = last("HEALTHCHECK") or ""
    hm = re.search(r"CMD (\[.*\])", hc)
    hcmd = json.loads(hm.group(1)) if hm else []
    check(hcmd[:1] == [binary] and all(w in helpwords for w in hcmd[1:]) and hcmd[1:2] == ["healthcheck"],
          "%s: HEALTHCHECK runs `keygate healthcheck` (a command in keygate --help)" % label, "got %s" % hcmd)
    ep = json.loads(last("ENTRYPOINT") or "[]")
    check(ep == [binary], "%s: ENTRYPOINT is keygate" % label, "got %s" % ep)
    env = {}
    for w, r in run["ins"]:
        if w == "ENV":
            k, _, v = r.partition("=")
            env[k] = v
    check(env.get("KEYGATE_CONFIG") == "/etc/keygate/keygate.yaml",
          "%s: ENV KEYGATE_CONFIG=/etc/keygate/keygate.yaml" % label)
    exposed = sorted(int(p.split("/")[0]) for p in (last("EXPOSE") or "").split())
    check(exposed == [DEFAULT_LISTEN_PORT, DEFAULT_ADMIN_PORT],
          "%s: EXPOSE 8080 9090 (keygate's default listen.port and admin.port)" % label, "got %s" % exposed)

    # Build context: every COPY source exists and passes the .dockerignore allowlist.
    root_ignore = read(os.path.join(repo, ".dockerignore"))
    bk_ignore_path = os.path.join(repo, "deploy/docker/Dockerfile.dockerignore")
    check(os.path.exists(bk_ignore_path) and read(bk_ignore_path) == root_ignore,
          "%s: .dockerignore and deploy/docker/Dockerfile.dockerignore are identical" % label)
    rules = [ln.strip() for ln in root_ignore.splitlines() if ln.strip() and not ln.startswith("#")]
    allowed = {r[1:].rstrip("/") for r in rules if r.startswith("!")}
    for w, r in build["ins"]:
        if w != "COPY":
            continue
        srcs = [p for p in r.split()[:-1] if not p.startswith("--")]
        for s in srcs:
            s = s.rstrip("/")
            check(os.path.exists(os.path.join(repo, s)) and rules[:1] == ["*"] and s in allowed,
                  "%s: COPY %s exists and is in the build context" % (label, s))
    return {"exposed": exposed, "binary": binary, "healthcheck": hcmd}


def parse_env_file(path):
    env = {}
    for line in read(path).splitlines():
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        k, sep, v = s.partition("=")
        if sep:
            env[k.strip()] = v
    return env


def check_compose(repo, out, helpwords, docker):
    label = "compose"
    d = os.path.join(repo, "deploy/docker-compose")
    doc = yaml.safe_load(read(os.path.join(d, "docker-compose.yml")))
    svcs = doc.get("services", {})
    if not check("legacy" in svcs and "keygate" in svcs, "%s: services legacy and keygate" % label):
        return
    legacy, kg = svcs["legacy"], svcs["keygate"]
    check("build" not in legacy and bool(legacy.get("image")), "%s: legacy uses an image, no build" % label)
    check(not legacy.get("ports") and not legacy.get("network_mode"), "%s: legacy publishes no port" % label)
    build = kg.get("build") or {}
    ctx = os.path.normpath(os.path.join(d, build.get("context", ".")))
    check(ctx == os.path.normpath(repo) and build.get("dockerfile") == "deploy/docker/Dockerfile",
          "%s: keygate is built from deploy/docker/Dockerfile with the repository as context" % label)
    for name, svc in (("keygate", kg), ("legacy", legacy)):
        check(svc.get("read_only") is True, "%s: %s has read_only: true" % (label, name))
        check(svc.get("cap_drop") == ["ALL"], "%s: %s has cap_drop: [ALL]" % (label, name))
        check("no-new-privileges:true" in (svc.get("security_opt") or []),
              "%s: %s has no-new-privileges:true" % (label, name))
    hc = (kg.get("healthcheck") or {}).get("test") or []
    check(hc[:1] == ["CMD"] and hc[1:] == docker.get("healthcheck"),
          "%s: keygate healthcheck is the image's `keygate healthcheck`" % label, "got %s" % hc)
    check(all(w in helpwords for w in hc[2:]), "%s: healthcheck words are in keygate --help" % label)

    # The config: mounted where KEYGATE_CONFIG points.
    envblock = kg.get("environment") or {}
    if isinstance(envblock, list):
        envblock = dict(e.split("=", 1) for e in envblock)
    cfg_in_container = envblock.get("KEYGATE_CONFIG", "/etc/keygate/keygate.yaml")
    mounts = {}
    for v in kg.get("volumes") or []:
        src, dst = v.split(":")[:2]
        mounts[dst] = os.path.normpath(os.path.join(d, src))
    cfg_host = mounts.get(cfg_in_container)
    if not check(cfg_host is not None and os.path.isfile(cfg_host),
                 "%s: a config file is mounted at KEYGATE_CONFIG (%s)" % (label, cfg_in_container)):
        return
    cfg = KeygateConfig(read(cfg_host), label)
    check_common_config(cfg, label)

    # Ports: the proxy published, the admin port not, or on 127.0.0.1 only.
    published = []
    for p in kg.get("ports") or []:
        parts = str(p).split(":")
        ip = parts[0] if len(parts) == 3 else "0.0.0.0"
        published.append((ip, int(parts[-1].split("/")[0])))
    cports = [c for _, c in published]
    check(cfg.listen_port in cports, "%s: keygate publishes listen.port %d" % (label, cfg.listen_port))
    check(all(c in (cfg.listen_port, cfg.admin_port) for c in cports),
          "%s: keygate publishes no other port" % label, "got %s" % cports)
    check(all(ip == "127.0.0.1" for ip, c in published if c == cfg.admin_port),
          "%s: admin port %d is not published, or on 127.0.0.1 only" % (label, cfg.admin_port))
    check(set(cports) <= set(docker.get("exposed", [])), "%s: published ports are EXPOSEd by the image" % label)

    # Upstream: the legacy service at the port its command serves.
    cmd = legacy.get("command")
    cmd = shlex.split(cmd) if isinstance(cmd, str) else list(cmd or [])
    host, port = cfg.upstream_host_port()
    serve_port = None
    if "http.server" in cmd:
        after = cmd[cmd.index("http.server") + 1:]
        nums = [a for a in after if a.isdigit()]
        serve_port = int(nums[0]) if nums else 8000
    check(host == "legacy" and port == serve_port,
          "%s: upstream.url %s is the legacy service's port" % (label, cfg.upstream_url), "legacy serves %s" % serve_port)

    # Environment: env_file .env, documented by .env.example.
    env_files = kg.get("env_file")
    env_files = [env_files] if isinstance(env_files, str) else list(env_files or [])
    check(env_files == [".env"], "%s: keygate takes its keys from env_file: .env" % label)
    example = os.path.join(d, ".env.example")
    env = parse_env_file(example) if os.path.exists(example) else {}
    check(os.path.exists(example), "%s: .env.example beside docker-compose.yml" % label)
    for var in cfg.env_vars:
        check(var in env, "%s: ${%s} of keygate.yaml is in its .env.example" % (label, var))
    check(bool(cfg.env_vars), "%s: keygate.yaml takes its key through ${VAR}" % label)
    grace = compose_duration_seconds(kg.get("stop_grace_period", "10s"))
    check(grace >= cfg.drain_delay + cfg.drain_timeout + 5,
          "%s: stop_grace_period %gs >= drain_delay + drain_timeout + 5s" % (label, grace))

    # For the replay: the legacy command with host paths, env and config.
    vol = {}
    for v in legacy.get("volumes") or []:
        src, dst = v.split(":")[:2]
        vol[dst] = os.path.normpath(os.path.join(d, src))
    replay = []
    for a in cmd:
        replay.append(vol.get(a, a))
    if replay and replay[0] == "python":
        replay[0] = "python3"
    if serve_port is not None:
        replay[replay.index(str(serve_port))] = "@PORT@"
    if "--bind" in replay:
        replay[replay.index("--bind") + 1] = "127.0.0.1"
    write(os.path.join(out, "compose/legacy.cmd"), "\n".join(replay) + "\n")
    write(os.path.join(out, "compose/keygate.yaml"), cfg.text)
    write(os.path.join(out, "compose/env"), "".join("%s=%s\n" % kv for kv in env.items()))
    write(os.path.join(out, "compose/vars"), "".join(v + "\n" for v in cfg.env_vars))
    write(os.path.join(out, "compose/container-env"),
          "".join("%s=%s\n" % (k, v) for k, v in envblock.items() if k != "KEYGATE_CONFIG"))
    write(os.path.join(out, "compose/stop-grace"), "%d\n" % grace)
    write(os.path.join(out, "compose/legacy-marker"),
          "legacy app\n" if os.path.exists(os.path.join(d, "legacy/index.html")) else "\n")


def check_kube(repo, out):
    label = "kubernetes"
    d = os.path.join(repo, "deploy/kubernetes")
    kz = yaml.safe_load(read(os.path.join(d, "kustomization.yaml")))
    docs = []
    for r in kz.get("resources", []):
        p = os.path.join(d, r)
        if check(os.path.isfile(p), "%s: resource %s exists" % (label, r)):
            docs += [x for x in yaml.safe_load_all(read(p)) if x]
    kinds = sorted(x["kind"] for x in docs)
    check(kinds == ["ConfigMap", "Deployment", "Secret", "Service"],
          "%s: ConfigMap, Deployment, Secret and Service" % label, "got %s" % kinds)
    images = {i["name"] for i in kz.get("images", [])}
    dep = by_kind(docs, "Deployment")
    if dep:
        kg = [c for c in dep[0]["spec"]["template"]["spec"]["containers"] if c["name"] == "keygate"]
        check(kg and kg[0]["image"].split(":")[0] in images,
              "%s: kustomization images: sets the keygate container's image" % label)
    config_text, keys_text = check_workload(label, docs)
    if config_text and keys_text:
        cfg = KeygateConfig(config_text, label)
        write(os.path.join(out, "kube/keys.yaml"), keys_text)
        write(os.path.join(out, "kube/keygate.yaml"),
              cfg.with_keys_file(os.path.join(out, "kube/keys.yaml")))
        write(os.path.join(out, "kube/keygate.live.yaml"),
              cfg.with_keys_file(os.path.join(out, "kube/live/keys.yaml")))
        write(os.path.join(out, "kube/upstream-port"), "%d\n" % cfg.upstream_host_port()[1])


def values_documented(text):
    """Keys at indent 0 and 2 of values.yaml each have a comment (above or inline);
    a group key counts as documented when all its children are."""
    lines = text.splitlines()
    keys = []  # (indent, name, documented)
    block_indent = None
    for i, line in enumerate(lines):
        if block_indent is not None:
            if line.strip() == "" or len(line) - len(line.lstrip()) > block_indent:
                continue
            block_indent = None
        m = re.match(r"^( *)([A-Za-z][A-Za-z0-9_]*):(.*)$", line)
        if not m:
            continue
        indent = len(m.group(1))
        rest = m.group(3)
        if re.match(r"\s*[|>][-+]?\s*(#.*)?$", rest):
            block_indent = indent
        if indent > 2:
            continue
        prev = lines[i - 1].strip() if i > 0 else ""
        documented = prev.startswith("#") or "#" in rest
        keys.append([indent, m.group(2), documented, rest.strip() == ""])
    undocumented = []
    parent_documented = False
    for idx, (indent, name, documented, group) in enumerate(keys):
        if indent == 0:
            parent_documented = documented
        elif parent_documented:
            continue  # part of a documented value (resources:, securityContext:, ...)
        if documented:
            continue
        if indent == 0 and group:
            children = []
            for j in range(idx + 1, len(keys)):
                if keys[j][0] == 0:
                    break
                children.append(keys[j])
            if children and all(c[2] for c in children):
                continue
        undocumented.append(name)
    return undocumented


def values_paths(v, prefix=()):
    yield prefix
    if isinstance(v, dict):
        for k, x in v.items():
            yield from values_paths(x, prefix + (k,))


def check_helm(repo, out, readme_snippet_required=True):
    label = "helm"
    d = os.path.join(repo, "helm/keygate")
    try:
        chart = Chart(d)
    except (TemplateError, yaml.YAMLError, OSError) as e:
        fail("%s: the chart's templates parse: %s" % (label, e))
        return
    ok("%s: the chart's templates parse (%d files)" % (label, len(chart.names)))
    meta = chart.meta
    check(meta.get("apiVersion") == "v2" and meta.get("name") == "keygate", "%s: Chart.yaml apiVersion v2, name keygate"
          % label)
    check(str(chart.values["image"]["tag"]) == str(meta.get("appVersion")),
          "%s: values image.tag equals appVersion %s" % (label, meta.get("appVersion")))
    undocumented = values_documented(chart.values_text)
    check(not undocumented, "%s: every value in values.yaml has a comment" % label, "missing: %s" % undocumented)
    check(isinstance(chart.values.get("config"), str), "%s: values config is a literal keygate.yaml" % label)

    # Every .Values.x.y in the templates exists in values.yaml.
    known = set(values_paths(chart.values))
    refs = set()
    unknown = []
    for n in chart.names:
        text = read(os.path.join(d, "templates", n))
        for ref in sorted(set(re.findall(r"\.Values((?:\.[A-Za-z0-9_]+)+)", text))):
            path = tuple(ref[1:].split("."))
            # .Values.keygate.* only appears in the parent-chart examples of comments.
            if path[0] == "keygate":
                continue
            refs.add(path)
            if path not in known:
                unknown.append("%s: .Values%s" % (n, ref))
    check(refs and not unknown, "%s: all %d .Values references of the templates are defined in values.yaml"
          % (label, len(refs)), "undefined: %s" % unknown)
    for name in ("keygate.sidecar", "keygate.sidecarVolumes"):
        check(name in chart.templates.defines, "%s: named template %s is defined" % (label, name))

    try:
        docs, notes = chart.render()
    except (TemplateError, yaml.YAMLError) as e:
        fail("%s: default values render: %s" % (label, e))
        return
    kinds = sorted(x["kind"] for x in docs)
    check(kinds == ["ConfigMap", "Deployment", "Secret", "Service"],
          "%s: default values render ConfigMap, Deployment, Secret, Service" % label, "got %s" % kinds)
    check("port-forward" in notes and "{{" not in notes, "%s: NOTES.txt renders" % label)
    write(os.path.join(out, "helm/rendered.yaml"), yaml.safe_dump_all(docs, sort_keys=False))
    config_text, keys_text = check_workload(label, docs)
    if config_text is not None:
        check(config_text.rstrip() == chart.values["config"].rstrip(),
              "%s: the rendered ConfigMap holds values config unchanged" % label)
    if keys_text is not None:
        check(keys_text.rstrip() == chart.values["keysFile"].rstrip(),
              "%s: the rendered Secret holds values keysFile unchanged" % label)
    if config_text and keys_text:
        cfg = KeygateConfig(config_text, label)
        write(os.path.join(out, "helm/keys.yaml"), keys_text)
        write(os.path.join(out, "helm/keygate.yaml"), cfg.with_keys_file(os.path.join(out, "helm/keys.yaml")))
        ports = chart.values["ports"]
        check(ports["http"] == cfg.listen_port and ports["admin"] == cfg.admin_port,
              "%s: values ports match listen.port/admin.port of values config" % label)

    # The optional parts and the other switches.
    variants = [
        ("serviceMonitor, PDB and ServiceAccount on",
         {"serviceMonitor": {"enabled": True, "labels": {"release": "prom"}},
          "podDisruptionBudget": {"enabled": True}, "serviceAccount": {"create": True}},
         ["ConfigMap", "Deployment", "PodDisruptionBudget", "Secret", "Service", "Service", "ServiceAccount",
          "ServiceMonitor"]),
        ("existingSecret set", {"existingSecret": "my-keys"}, ["ConfigMap", "Deployment", "Service"]),
        ("sidecar-only (deployment and service off)",
         {"deployment": {"enabled": False}, "service": {"enabled": False}, "podDisruptionBudget": {"enabled": True}},
         ["ConfigMap", "Secret"]),
        ("app off, extraEnv, podAnnotations",
         {"app": {"enabled": False}, "extraEnv": [{"name": "KEYGATE_LOG_LEVEL", "value": "debug"}],
          "podAnnotations": {"a": "b"}, "nodeSelector": {"k": "v"}},
         ["ConfigMap", "Deployment", "Secret", "Service"]),
    ]
    for what, overrides, want in variants:
        try:
            vdocs, _ = chart.render(overrides)
        except (TemplateError, yaml.YAMLError) as e:
            fail("%s: renders with %s: %s" % (label, what, e))
            continue
        got = sorted(x["kind"] for x in vdocs)
        if not check(got == want, "%s: renders with %s" % (label, what), "got %s" % got):
            continue
        if what.startswith("serviceMonitor"):
            sm = by_kind(vdocs, "ServiceMonitor")[0]
            msvc = [s for s in by_kind(vdocs, "Service")
                    if all((s["metadata"].get("labels") or {}).get(k) == v
                           for k, v in sm["spec"]["selector"]["matchLabels"].items())]
            check(sm["apiVersion"] == "monitoring.coreos.com/v1" and len(msvc) == 1
                  and msvc[0]["spec"]["ports"][0]["name"] == sm["spec"]["endpoints"][0]["port"]
                  and sm["spec"]["endpoints"][0]["path"] == "/metrics",
                  "%s: the ServiceMonitor scrapes /metrics of a metrics Service on the admin port" % label)
            pod = by_kind(vdocs, "Deployment")[0]["spec"]["template"]["spec"]
            sa = by_kind(vdocs, "ServiceAccount")[0]["metadata"]["name"]
            check(pod.get("serviceAccountName") == sa, "%s: the pods use the created ServiceAccount" % label)
        if what.startswith("existingSecret"):
            vols = by_kind(vdocs, "Deployment")[0]["spec"]["template"]["spec"]["volumes"]
            check(any((v.get("secret") or {}).get("secretName") == "my-keys" for v in vols),
                  "%s: with existingSecret the pods mount that Secret" % label)
        if what.startswith("app off"):
            c = by_kind(vdocs, "Deployment")[0]["spec"]["template"]["spec"]["containers"]
            check([x["name"] for x in c] == ["keygate"] and
                  {"name": "KEYGATE_LOG_LEVEL", "value": "debug"} in c[0]["env"],
                  "%s: app off leaves keygate alone, with extraEnv" % label)
    for what, overrides, needle in (
            ("ports.http differing from listen.port", {"ports": {"http": 8081}}, "ports.http"),
            ("no keysFile and no existingSecret", {"keysFile": ""}, "keysFile"),
    ):
        try:
            chart.render(overrides)
            fail("%s: rendering with %s fails" % (label, what))
        except TemplateError as e:
            check(needle in str(e), "%s: rendering with %s fails with a clear message" % (label, what), str(e))

    # The sidecar include from another chart, exactly as the chart's README shows it.
    readme = read(os.path.join(d, "README.md"))
    blocks = re.findall(r"```yaml\n(.*?)```", readme, re.S)
    snippet = [b for b in blocks if 'include "keygate.sidecar"' in b and "kind: Deployment" in b]
    if not check(snippet, "%s: README.md shows a parent chart's Deployment including keygate.sidecar" % label):
        return
    parent = Templates()
    parent.defines = chart.templates.defines
    try:
        parent.add("parent-deployment.yaml", snippet[0])
        pctx = chart.context({})
        sub_values = pctx["Values"]
        sub_values = deep_merge(sub_values, {"deployment": {"enabled": False}, "service": {"enabled": False}})
        pctx = {"Values": {"keygate": sub_values, "replicaCount": 1.0, "image": {"repository": "my-app",
                                                                                   "tag": "1.2.3"}},
                "Release": pctx["Release"], "Chart": {"Name": "my-app", "Version": "1.0.0", "AppVersion": "1.2.3"}}
        pdoc = yaml.safe_load(parent.render("parent-deployment.yaml", pctx))
        sub_docs, _ = chart.render({"deployment": {"enabled": False}, "service": {"enabled": False}})
    except (TemplateError, yaml.YAMLError) as e:
        fail("%s: the README's parent-chart example renders: %s" % (label, e))
        return
    ok("%s: the README's parent-chart example renders" % label)
    check_workload("helm sidecar in a parent chart", [pdoc] + sub_docs + [{
        "kind": "Service", "apiVersion": "v1", "metadata": {"name": "my-app"},
        "spec": {"selector": pdoc["spec"]["template"]["metadata"]["labels"],
                 "ports": [{"port": 80, "targetPort": "keygate-http"}]}}])


def check_env_and_cli(repo, helptext, helpwords):
    """Every KEYGATE_* variable and ${VAR} the artefacts use is known to keygate / documented."""
    root_example = read(os.path.join(repo, ".env.example"))
    files = []
    for base in ("deploy", "helm"):
        for dp, _, fs in os.walk(os.path.join(repo, base)):
            files += [os.path.join(dp, f) for f in fs]
    used = {}
    for f in files:
        try:
            text = read(f)
        except UnicodeDecodeError:
            continue
        for v in re.findall(r"\bKEYGATE_[A-Z_]+\b", text):
            used.setdefault(v, set()).add(os.path.relpath(f, repo))
    for v in sorted(used):
        check(v in helptext, "env: %s (used in %s) is listed by keygate --help" % (v, ", ".join(sorted(used[v]))))
        check(re.search(r"^#?\s*%s=" % v, root_example, re.M) is not None,
              "env: %s is documented in .env.example" % v)
    for cfgfile in ("deploy/docker-compose/keygate.yaml",):
        for var in KeygateConfig(read(os.path.join(repo, cfgfile)), cfgfile).env_vars:
            check(re.search(r"^#?\s*%s=" % var, root_example, re.M) is not None,
                  "env: ${%s} of %s is documented in .env.example" % (var, cfgfile))
    for word in ("healthcheck", "check-config", "--config"):
        check(word in helpwords, "cli: `%s` is in keygate --help" % word)


def main():
    cmd = sys.argv[1]
    if cmd == "static":
        repo, out, helpfile, libfile = sys.argv[2:6]
        helptext = read(helpfile)
        helpwords = set(re.findall(r"[A-Za-z][A-Za-z-]*|--[a-z-]+", helptext))
        libpkgs = [x for x in read(libfile).split() if x] if os.path.exists(libfile) else []
        docker = {}
        try:
            docker = check_docker(repo, helpwords, libpkgs)
        except Exception as e:  # a parse error is a failed check, not a crash
            fail("docker: Dockerfile checks: %s: %s" % (type(e).__name__, e))
        for name, fn in (("compose", lambda: check_compose(repo, out, helpwords, docker)),
                         ("kubernetes", lambda: check_kube(repo, out)),
                         ("helm", lambda: check_helm(repo, out)),
                         ("env", lambda: check_env_and_cli(repo, helptext, helpwords))):
            try:
                fn()
            except Exception as e:
                fail("%s: checks: %s: %s" % (name, type(e).__name__, e))
        return 0
    if cmd == "replay-config":
        src, dst, admin_port = sys.argv[2], sys.argv[3], int(sys.argv[4])
        data = yaml.safe_load(read(src))
        data.setdefault("admin", {})
        data["admin"]["address"] = "127.0.0.1"
        data["admin"]["port"] = admin_port
        write(dst, yaml.safe_dump(data, sort_keys=False))
        return 0
    if cmd == "add-key":
        src, dst, key_id, digest = sys.argv[2:6]
        data = yaml.safe_load(read(src))
        data["keys"].append({"id": key_id, "hash": digest})
        write(dst, yaml.safe_dump(data, sort_keys=False))
        return 0
    if cmd == "free-ports":
        import socket
        socks = []
        for _ in range(int(sys.argv[2])):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        print(" ".join(str(s.getsockname()[1]) for s in socks))
        for s in socks:
            s.close()
        return 0
    raise SystemExit("unknown command " + cmd)


if __name__ == "__main__":
    sys.exit(main())
PY
}
write_helper

# Run a command with an empty environment except PATH and HOME, plus NAME=VALUE
# arguments: the developer's own KEYGATE_* variables never leak into a check.
clean_env() {
  env -i PATH="$PATH" HOME="${HOME:-/tmp}" "$@"
}

# spawn COMMAND...: clean_env in the background; $! is the command's own pid
# (env execs it), so signals and wait reach keygate itself.
spawn() {
  env -i PATH="$PATH" HOME="${HOME:-/tmp}" "$@" &
}

# HTTP status of GET URL [curl options...], or 000.
http_status() {
  local url=$1
  shift
  curl -s -o "$tmp/body" -w '%{http_code}' --max-time 5 "$@" "$url" 2>/dev/null || true
}

# wait_status URL STATUS SECONDS [curl options...]: poll until URL answers STATUS.
wait_status() {
  local url=$1 want=$2 secs=$3
  shift 3
  local deadline=$((SECONDS + secs))
  while ((SECONDS < deadline)); do
    [[ "$(http_status "$url" "$@")" == "$want" ]] && return 0
    sleep 0.1
  done
  return 1
}

# exited PID: true once the child process PID has exited (a zombie counts).
exited() {
  local state
  state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 0
  [[ -z "$state" || "$state" == Z ]]
}

# wait_exit PID SECONDS: wait for the child to exit; its status in $exit_status
# (124 when it is still running after SECONDS; it is then killed).
wait_exit() {
  local pid=$1 deadline=$((SECONDS + $2))
  while ! exited "$pid" && ((SECONDS < deadline)); do sleep 0.1; done
  if ! exited "$pid"; then
    kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    exit_status=124
    return
  fi
  wait "$pid"
  exit_status=$?
}

free_ports() { "$PY" "$helper" free-ports "$1"; }

# --- (a) yamllint --------------------------------------------------------------
say "(a) yamllint with .yamllint on the plain YAML of deploy/ and helm/ (not templates)"
mapfile -t yaml_files < <(find deploy helm -type f \( -name '*.yaml' -o -name '*.yml' \) \
  -not -path '*/templates/*' | sort)
if out=$(yamllint -c .yamllint -f parsable "${yaml_files[@]}" 2>&1); then
  pass "yamllint: ${#yaml_files[@]} files clean (${yaml_files[*]})"
else
  fail "yamllint"
  printf '%s\n' "$out"
fi

# --- (c) static checks, extraction of the configs -------------------------------
say "(c) ports, paths, commands, variables and libraries against keygate; Helm chart render"
"$KEYGATE" --help >"$tmp/help.txt" 2>&1
libs="$tmp/libpkgs.txt"
: >"$libs"
if command -v ldd >/dev/null && command -v dpkg >/dev/null; then
  # One dpkg -S for every library keygate links, under each name it may be
  # registered with (usrmerge: /lib or /usr/lib, symlink or real file).
  candidates=()
  while read -r lib; do
    real=$(readlink -f "$lib")
    for path in "$lib" "$real"; do candidates+=("$path" "${path#/usr}" "/usr${path#/usr}"); done
  done < <(ldd "$KEYGATE" | awk '/=> \//{print $3}')
  dpkg -S "${candidates[@]}" 2>/dev/null | cut -d: -f1 | sort -u >"$libs"
fi
"$PY" "$helper" static "$repo" "$tmp/out" "$tmp/help.txt" "$libs" >"$tmp/static.txt" 2>&1
static_rc=$?
while IFS= read -r line; do
  case "$line" in
    "ok "*) pass "${line#ok }" ;;
    "FAIL "*) fail "${line#FAIL }" ;;
    "note "*) say "note: ${line#note }" ;;
    *) say "$line" ;;
  esac
done <"$tmp/static.txt"
expect "$static_rc" "static checks ran to the end"

if command -v kubectl >/dev/null; then
  if timeout 120 kubectl kustomize deploy/kubernetes >"$tmp/kustomize.yaml" 2>"$tmp/kustomize.err"; then
    kinds=$(grep -E '^kind: ' "$tmp/kustomize.yaml" | sort | tr '\n' ' ')
    [[ "$kinds" == "kind: ConfigMap kind: Deployment kind: Secret kind: Service " ]]
    expect $? "kubectl kustomize deploy/kubernetes builds the base" "$kinds"
  else
    fail "kubectl kustomize deploy/kubernetes: $(head -n3 "$tmp/kustomize.err")"
  fi
else
  say "note: kubectl not installed: kustomize build skipped (the manifests were checked above)"
fi

# --- (b) keygate check-config ----------------------------------------------------
say "(b) keygate check-config on each deployment's configuration"
# check_config LABEL CONFIG [NAME=VALUE...]
check_config() {
  local label=$1 config=$2
  shift 2
  if [[ ! -f "$config" ]]; then
    fail "check-config $label: no configuration extracted"
    return
  fi
  if clean_env "$@" "$KEYGATE" check-config --config "$config" >"$tmp/cc.out" 2>"$tmp/cc.err"; then
    pass "check-config $label: $(grep -c 'id:' "$tmp/cc.out") key(s), $(grep '^listen:' "$tmp/cc.out")"
  else
    fail "check-config $label (exit $?): $(tr '\n' ' ' <"$tmp/cc.err")"
  fi
}
check_config "kubernetes ConfigMap + Secret" "$tmp/out/kube/keygate.yaml"
check_config "helm default values (rendered ConfigMap + Secret)" "$tmp/out/helm/keygate.yaml"

# The compose environment: its .env.example, with a fresh key for every variable
# the config needs that the example leaves empty.
compose_env=()
if [[ -f "$tmp/out/compose/env" ]]; then
  declare -A example_value=()
  while IFS='=' read -r name value; do
    example_value[$name]=$value
  done <"$tmp/out/compose/env"
  while read -r name; do
    [[ -n "${example_value[$name]:-}" ]] || example_value[$name]=$("$KEYGATE" gen-key)
  done <"$tmp/out/compose/vars"
  for name in "${!example_value[@]}"; do compose_env+=("$name=${example_value[$name]}"); done
  while IFS= read -r kv; do [[ -n "$kv" ]] && compose_env+=("$kv"); done <"$tmp/out/compose/container-env"
  key_var=$(head -n1 "$tmp/out/compose/vars")
  api_key=${example_value[$key_var]}
fi
check_config "docker-compose keygate.yaml (.env.example + generated key)" "$tmp/out/compose/keygate.yaml" \
  "${compose_env[@]}"

# --- (d) replay of the compose setup on loopback -----------------------------------
say "(d) replay of docker-compose.yml on loopback: legacy command, keygate with its env and config"
if [[ -f "$tmp/out/compose/legacy.cmd" && -n "${key_var:-}" ]]; then
  read -r up_port listen_port admin_port < <(free_ports 3)
  mapfile -t legacy_cmd <"$tmp/out/compose/legacy.cmd"
  legacy_cmd=("${legacy_cmd[@]//@PORT@/$up_port}")
  say "legacy: ${legacy_cmd[*]}"
  spawn PYTHONDONTWRITEBYTECODE=1 "${legacy_cmd[@]}" >"$tmp/legacy.log" 2>&1
  pids+=($!)
  wait_status "http://127.0.0.1:$up_port/" 200 10
  expect $? "legacy command serves on 127.0.0.1:$up_port" "$(tail -n3 "$tmp/legacy.log")"

  "$PY" "$helper" replay-config "$tmp/out/compose/keygate.yaml" "$tmp/replay.yaml" "$admin_port"
  replay_env=("${compose_env[@]}" KEYGATE_CONFIG="$tmp/replay.yaml"
    KEYGATE_UPSTREAM="http://127.0.0.1:$up_port" KEYGATE_LISTEN="127.0.0.1:$listen_port")
  say "keygate: KEYGATE_UPSTREAM=http://127.0.0.1:$up_port KEYGATE_LISTEN=127.0.0.1:$listen_port admin 127.0.0.1:$admin_port"
  spawn "${replay_env[@]}" "$KEYGATE" >"$tmp/keygate.out" 2>"$tmp/keygate.err"
  kg_pid=$!
  pids+=("$kg_pid")
  wait_status "http://127.0.0.1:$admin_port/healthz" 200 10
  expect $? "keygate starts with the compose environment (admin /healthz 200)" "$(tail -n3 "$tmp/keygate.err")"
  wait_status "http://127.0.0.1:$admin_port/readyz" 200 5
  expect $? "admin /readyz 200 (keys loaded)"
  status=$(http_status "http://127.0.0.1:$admin_port/metrics")
  [[ "$status" == 200 ]] && grep -q '^keygate_' "$tmp/body"
  expect $? "admin /metrics 200 with keygate_ series" "status $status"

  status=$(http_status "http://127.0.0.1:$listen_port/")
  [[ "$status" == 401 ]] && grep -q missing_api_key "$tmp/body"
  expect $? "no key: 401 missing_api_key" "status $status"
  status=$(http_status "http://127.0.0.1:$listen_port/" -H "X-API-Key: not-the-key-$RANDOM")
  [[ "$status" == 401 ]] && grep -q invalid_api_key "$tmp/body"
  expect $? "wrong key: 401 invalid_api_key" "status $status"
  status=$(http_status "http://127.0.0.1:$listen_port/" -H "X-API-Key: $api_key")
  marker=$(head -n1 "$tmp/out/compose/legacy-marker")
  [[ "$status" == 200 ]] && grep -q "$marker" "$tmp/body"
  expect $? "\$$key_var as X-API-Key: 200 from the legacy app" "status $status"

  clean_env "${replay_env[@]}" timeout 10 "$KEYGATE" healthcheck >/dev/null 2>"$tmp/hc.err"
  expect $? "\`keygate healthcheck\` (the image's HEALTHCHECK) exits 0 with the compose environment" \
    "$(cat "$tmp/hc.err")"

  kill -TERM "$kg_pid"
  grace=$(head -n1 "$tmp/out/compose/stop-grace")
  wait_exit "$kg_pid" "$grace"
  expect "$exit_status" "SIGTERM: keygate drains and exits 0 within stop_grace_period (${grace}s)" \
    "exit $exit_status"

  # Fail-closed: the key variable unset, then empty as in .env.example.
  for how in unset empty; do
    env_without=()
    for kv in "${replay_env[@]}"; do
      [[ "$kv" == "$key_var="* ]] || env_without+=("$kv")
    done
    [[ "$how" == empty ]] && env_without+=("$key_var=")
    clean_env "${env_without[@]}" timeout 10 "$KEYGATE" >"$tmp/nokey.out" 2>"$tmp/nokey.err"
    rc=$?
    if [[ "$how" == unset ]]; then
      [[ $rc == 78 ]] && grep -q "^keygate: .*$key_var" "$tmp/nokey.err"
    else
      [[ $rc == 78 ]] && grep -q '^keygate: ' "$tmp/nokey.err"
    fi
    expect $? "\$$key_var $how: keygate exits 78 with a \`keygate: \` line" \
      "exit $rc: $(tr '\n' ' ' <"$tmp/nokey.err")"
    [[ "$(http_status "http://127.0.0.1:$listen_port/")" == 000 ]]
    expect $? "\$$key_var $how: nothing listens on the proxy port"
  done
else
  fail "replay: the compose setup could not be extracted"
fi

# --- (d') the Kubernetes config with kubelet-style Secret updates -------------------
say "(d) Kubernetes config on loopback: keys from a kubelet-style Secret directory, hot reload, drain"
if [[ -f "$tmp/out/kube/keygate.live.yaml" ]]; then
  read -r app_port listen_port admin_port < <(free_ports 3)
  mkdir -p "$tmp/app" "$tmp/out/kube/live/..v1"
  echo "example app" >"$tmp/app/index.html"
  spawn PYTHONDONTWRITEBYTECODE=1 python3 -m http.server "$app_port" --bind 127.0.0.1 \
    --directory "$tmp/app" >"$tmp/app.log" 2>&1
  pids+=($!)
  # The layout the kubelet gives a Secret volume: keys.yaml -> ..data/keys.yaml,
  # ..data -> ..<timestamp>, swapped by an atomic rename.
  live="$tmp/out/kube/live"
  cp "$tmp/out/kube/keys.yaml" "$live/..v1/keys.yaml"
  ln -s ..v1 "$live/..data"
  ln -s ..data/keys.yaml "$live/keys.yaml"
  "$PY" "$helper" replay-config "$tmp/out/kube/keygate.live.yaml" "$tmp/kube-replay.yaml" "$admin_port"
  spawn KEYGATE_CONFIG="$tmp/kube-replay.yaml" KEYGATE_UPSTREAM="http://127.0.0.1:$app_port" \
    KEYGATE_LISTEN="127.0.0.1:$listen_port" "$KEYGATE" >"$tmp/kube.out" 2>"$tmp/kube.err"
  kube_pid=$!
  pids+=("$kube_pid")
  wait_status "http://127.0.0.1:$app_port/" 200 10
  wait_status "http://127.0.0.1:$admin_port/readyz" 200 10
  expect $? "readinessProbe path /readyz: 200 with the Secret's keys" "$(tail -n3 "$tmp/kube.err")"
  status=$(http_status "http://127.0.0.1:$admin_port/healthz")
  expect "$([[ $status == 200 ]]; echo $?)" "livenessProbe path /healthz: 200" "status $status"

  new_key=$("$KEYGATE" gen-key)
  status=$(http_status "http://127.0.0.1:$listen_port/" -H "X-API-Key: $new_key")
  expect "$([[ $status == 401 ]]; echo $?)" "a key not in the Secret: 401" "status $status"
  mkdir "$live/..v2"
  "$PY" "$helper" add-key "$live/..v1/keys.yaml" "$live/..v2/keys.yaml" rotated-client \
    "$(printf '%s\n' "$new_key" | "$KEYGATE" hash-key)"
  ln -s ..v2 "$live/..data_tmp" && mv -T "$live/..data_tmp" "$live/..data"
  wait_status "http://127.0.0.1:$listen_port/" 200 15 -H "X-API-Key: $new_key"
  expect $? "a key added by an atomic ..data swap of the Secret is accepted without a restart"

  kill -TERM "$kube_pid"
  wait_status "http://127.0.0.1:$admin_port/readyz" 503 3
  expect $? "SIGTERM: /readyz turns 503 at once (draining)"
  status=$(http_status "http://127.0.0.1:$listen_port/" -H "X-API-Key: $new_key")
  expect "$([[ $status == 200 ]]; echo $?)" "SIGTERM: still serving during drain_delay" "status $status"
  wait_exit "$kube_pid" 30
  expect "$exit_status" "SIGTERM: exits 0 within terminationGracePeriodSeconds (30s)" "exit $exit_status"
else
  fail "kubernetes replay: the configuration could not be extracted"
fi

say "$passed passed, $failed failed"
((failed == 0))
