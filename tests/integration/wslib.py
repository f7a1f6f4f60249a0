# SPDX-License-Identifier: MIT
"""Shared helpers for the end-to-end tests: temporary flake repositories with real git,
the real workspaced binary on a real socket, a raw JSON-RPC client, wsctl, and snapshots
of everything a failed request must leave byte-identical (work tree, .git/index, state)."""
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import unittest

WORKSPACED = os.environ.get("WORKSPACED", "build/workspaced")
WSCTL = os.environ.get("WSCTL") or os.path.join(os.path.dirname(WORKSPACED), "wsctl")
DATA = os.environ.get("WS_TEST_DATA", os.path.join(os.path.dirname(__file__), "..", "data"))
FIXTURES = os.path.join(DATA, "fixtures")
HOST = "atlas"

GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.invalid"}


def have(program):
    return shutil.which(program) is not None


def git(repo, *args, check=True):
    env = dict(os.environ, **GIT_ENV)
    p = subprocess.run(["git", "-C", repo, *args], capture_output=True, env=env)
    if check and p.returncode != 0:
        raise AssertionError("git %s failed: %s" % (" ".join(args), p.stderr.decode()))
    return p.stdout.decode()


def fixture(name):
    with open(os.path.join(FIXTURES, "nix", name), "rb") as f:
        return f.read()


def expected(name):
    with open(os.path.join(FIXTURES, "create", name), "rb") as f:
        return f.read()


def nix_parse_ok(path):
    """True when nix-instantiate --parse accepts the file (None when nix is missing)."""
    if not have("nix-instantiate"):
        return None
    p = subprocess.run(["nix-instantiate", "--parse", path], capture_output=True)
    return p.returncode == 0


class Repo:
    """A temporary flake repository with machines/HOST/default.nix committed."""

    def __init__(self, machine_text, host=HOST, extra_files=None, commit=True):
        self.tmp = tempfile.mkdtemp(prefix="ws-e2e-")
        self.path = os.path.join(self.tmp, "flake")
        self.host = host
        self.machine_dir = os.path.join(self.path, "machines", host)
        os.makedirs(self.machine_dir)
        with open(os.path.join(self.path, "flake.nix"), "w") as f:
            f.write("{ outputs = { self }: { }; }\n")
        self.write("machines/%s/default.nix" % host, machine_text)
        for rel, text in (extra_files or {}).items():
            self.write(rel, text)
        git(self.path, "init", "-q", "-b", "main")
        if commit:
            git(self.path, "add", "-A")
            git(self.path, "commit", "-q", "-m", "initial")
        self.sandbox = os.path.join(self.tmp, "sandboxed")
        self.state_dir = os.path.join(self.tmp, "state")
        self.run_dir = os.path.join(self.tmp, "run")
        os.makedirs(self.run_dir, mode=0o700)

    def write(self, rel, data):
        p = os.path.join(self.path, rel)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "wb") as f:
            f.write(data if isinstance(data, bytes) else data.encode())

    def read(self, rel):
        with open(os.path.join(self.path, rel), "rb") as f:
            return f.read()

    def exists(self, rel):
        return os.path.lexists(os.path.join(self.path, rel))

    @property
    def machine_rel(self):
        return "machines/%s/default.nix" % self.host

    def snapshot(self):
        """Every file of the work tree, .git/index and the state directory, as bytes."""
        snap = {}
        for base in (self.path, self.state_dir):
            for root, dirs, files in os.walk(base):
                if root == os.path.join(self.path, ".git"):
                    dirs[:] = []
                    files = [f for f in files if f == "index"]
                for d in dirs:
                    snap[os.path.join(root, d) + "/"] = b"<dir>"
                for f in files:
                    p = os.path.join(root, f)
                    if os.path.islink(p):
                        snap[p] = b"<link>" + os.readlink(p).encode()
                        continue
                    with open(p, "rb") as fh:
                        snap[p] = fh.read()
        return snap

    def cleanup(self):
        shutil.rmtree(self.tmp, ignore_errors=True)


class Conn:
    """A raw client: one JSON text per line."""

    def __init__(self, path, timeout=30):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.settimeout(timeout)
        self.s.connect(path)
        self.buf = b""

    def send_raw(self, data):
        self.s.sendall(data if isinstance(data, bytes) else data.encode())

    def send(self, obj):
        self.send_raw(json.dumps(obj) + "\n")

    def recv_line(self, timeout=None):
        if timeout is not None:
            self.s.settimeout(timeout)
        while b"\n" not in self.buf:
            chunk = self.s.recv(65536)
            if not chunk:
                raise EOFError("connection closed")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line

    def recv(self, timeout=None):
        return json.loads(self.recv_line(timeout))

    def call(self, method, params=None, id=1):
        msg = {"jsonrpc": "2.0", "id": id, "method": method}
        if params is not None:
            msg["params"] = params
        self.send(msg)
        while True:
            r = self.recv()
            if r.get("id") == id and "method" not in r:
                return r

    def closed(self, timeout=5):
        """True when the daemon closed the connection (EOF) within @timeout."""
        self.s.settimeout(timeout)
        try:
            while True:
                chunk = self.s.recv(65536)
                if not chunk:
                    return True
        except socket.timeout:
            return False
        except ConnectionResetError:
            return True
        except OSError:
            return True

    def close(self):
        self.s.close()


class Daemon:
    """The real workspaced binary on a temporary repository."""

    def __init__(self, repo, verify="none", extra_args=(), config=None, env=None,
                 wait=True, build_command=None):
        self.repo = repo
        self.socket = os.path.join(repo.run_dir, "workspaced.sock")
        self.log_path = os.path.join(repo.tmp, "workspaced-%d.log" % time.monotonic_ns())
        args = [WORKSPACED, "--repo", repo.path, "--machine", repo.host,
                "--socket", self.socket, "--state-dir", repo.state_dir,
                "--sandbox-root", repo.sandbox, "--verify", verify]
        if build_command is not None:
            args += ["--build-command", build_command]
        if config is not None:
            cpath = os.path.join(repo.tmp, "config")
            with open(cpath, "w") as f:
                f.write(config)
            args += ["--config", cpath]
        args += list(extra_args)
        e = dict(os.environ)
        e["XDG_RUNTIME_DIR"] = repo.run_dir
        e["XDG_CONFIG_HOME"] = os.path.join(repo.tmp, "config-home")
        e.pop("NOTIFY_SOCKET", None)
        e.pop("LISTEN_FDS", None)
        e.pop("LISTEN_PID", None)
        if env:
            e.update(env)
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT, env=e)
        if wait:
            self.wait_ready()

    def wait_ready(self, timeout=15):
        end = time.time() + timeout
        while time.time() < end:
            if self.proc.poll() is not None:
                raise AssertionError("workspaced exited %d:\n%s" % (self.proc.returncode,
                                                                    self.output()))
            if os.path.exists(self.socket):
                try:
                    c = Conn(self.socket)
                    c.close()
                    return
                except OSError:
                    pass
            time.sleep(0.02)
        raise AssertionError("workspaced did not start:\n" + self.output())

    def output(self):
        if not self.log.closed:
            self.log.flush()
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def conn(self):
        return Conn(self.socket)

    def call(self, method, params=None):
        c = self.conn()
        try:
            return c.call(method, params)
        finally:
            c.close()

    def create(self, name, type, **kw):
        params = {"name": name, "type": type}
        params.update(kw)
        return self.call("workspace.create", params)

    def wsctl(self, *args, env=None, timeout=60):
        e = dict(os.environ, WORKSPACED_SOCKET=self.socket)
        if env:
            e.update(env)
        return subprocess.run([WSCTL, *args], capture_output=True, env=e, timeout=timeout)

    def stop(self, expect_code=0):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError("workspaced did not stop on SIGTERM")
        self.log.close()
        if expect_code is not None and self.proc.returncode != expect_code:
            raise AssertionError("workspaced exited %d:\n%s" % (self.proc.returncode,
                                                                self.output()))
        out = self.output()
        for bad in ("AddressSanitizer", "runtime error:", "LeakSanitizer"):
            if bad in out:
                raise AssertionError("sanitizer report:\n" + out)
        return out


class DaemonTest(unittest.TestCase):
    """Base class: self.repo / self.d made by self.start(); torn down after each test."""

    def setUp(self):
        self.repos = []
        self.daemons = []

    def tearDown(self):
        for d in self.daemons:
            try:
                d.stop(expect_code=None)
            except Exception:
                pass
        for r in self.repos:
            r.cleanup()

    def make_repo(self, text, **kw):
        r = Repo(text, **kw)
        self.repos.append(r)
        return r

    def start(self, text_or_repo, **kw):
        repo = text_or_repo if isinstance(text_or_repo, Repo) else self.make_repo(text_or_repo)
        d = Daemon(repo, **kw)
        self.daemons.append(d)
        return repo, d

    def stop(self, d):
        self.daemons.remove(d)
        return d.stop()

    def assertOk(self, resp):
        self.assertIn("result", resp, "expected a result, got %r" % resp)
        return resp["result"]

    def assertErr(self, resp, code, kind=None):
        self.assertIn("error", resp, "expected error %d, got %r" % (code, resp))
        self.assertEqual(resp["error"]["code"], code, resp)
        if kind:
            self.assertEqual(resp["error"]["data"]["kind"], kind, resp)
        return resp["error"]

    def assertUnchanged(self, before, repo):
        after = repo.snapshot()
        self.assertEqual(sorted(before.keys()), sorted(after.keys()),
                         "files appeared or disappeared")
        for k in before:
            self.assertEqual(before[k], after[k], "%s changed" % k)

    def assertStaged(self, repo, paths):
        names = git(repo.path, "diff", "--cached", "--name-only").split()
        self.assertEqual(sorted(names), sorted(paths))


def main():
    unittest.main(verbosity=2)
