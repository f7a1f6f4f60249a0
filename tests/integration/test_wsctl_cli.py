#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""wsctl against a fake daemon: a small JSON-RPC 2.0 server on a Unix socket, in a thread,
answering canned results shaped like PROTOCOL.md. This checks the client's parsing, output
layout, exit codes and usage errors; the end-to-end tests with the real daemon live beside
this file. Run: WSCTL=path/to/wsctl python3 tests/integration/test_wsctl_cli.py"""

import copy
import json
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

WSCTL = os.environ.get("WSCTL", "")

INFO = {
    "version": "0.1.0", "protocol": 1, "repo": "/repo", "machine": "atlas",
    "file": "machines/atlas/default.nix", "sandboxRoot": "/home/u/sandboxed",
    "socket": "/run/user/1000/workspaced.sock", "subnet": "192.168.83.0/24",
    "ranges": {"vm": ["192.168.83.10", "192.168.83.49"],
               "container": ["192.168.83.50", "192.168.83.89"],
               "incus": ["192.168.83.90", "192.168.83.129"]},
    "workspaces": 3, "pid": 4242, "uptimeSeconds": 3725,
}

DEV = {
    "name": "dev", "type": "container", "ip": "192.168.83.50",
    "config": "./workspaces/dev.nix", "autoStart": False, "hostKey": None,
    "unit": "container@dev.service",
    "source": {"file": "machines/atlas/default.nix", "line": 18},
    "extra": {"passHostGpu": "true"}, "problems": [],
    "state": {"active": "active", "sub": "running"},
}

LIST = {"workspaces": [
    DEV,
    {"name": "builder-long", "type": "vm", "ip": "192.168.83.10",
     "config": "./workspaces/builder-long.nix", "autoStart": True,
     "hostKey": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG", "unit": "microvm@builder-long.service",
     "source": {"file": "machines/atlas/default.nix", "line": 24}, "extra": {},
     "problems": [{"kind": "IP_DUPLICATE", "message": "192.168.83.10 is also held by x"},
                  {"kind": "IP_OUT_OF_RANGE", "message": "outside the vm range"}]},
    {"name": "inc", "type": "incus", "ip": None, "ipExpr": "base + \".91\"",
     "config": "./workspaces/inc.nix", "autoStart": False, "hostKey": None,
     "unit": "incus-workspace-inc.service",
     "source": {"file": "machines/atlas/default.nix", "line": 30}, "extra": {},
     "problems": []},
]}

SHOW = dict(DEV, hostKeyFile={
    "path": "/home/u/sandboxed/dev/ssh-host-keys/ssh_host_ed25519_key.pub", "exists": True})

CREATE = {"workspace": DEV,
          "files": ["machines/atlas/workspaces/dev.nix", "machines/atlas/default.nix"],
          "staged": True, "verify": {"level": "parse", "ok": True}}

HOSTKEY = {"name": "dev", "hostKey": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIK", "changed": True}

FINGERPRINT = "SHA256:q0Zk8Y8b8sL2m1mYwT9kQv9iJtq1m1m1m1m1m1m1m1m"


class FakeDaemon:
    """Answers each request line from `results` / `errors`; records what it received."""

    def __init__(self, tmp):
        self.path = os.path.join(tmp, "fake.sock")
        self.results = {
            "daemon.info": copy.deepcopy(INFO),
            "workspace.list": copy.deepcopy(LIST),
            "workspace.show": copy.deepcopy(SHOW),
            "workspace.create": copy.deepcopy(CREATE),
            "workspace.hostkey": copy.deepcopy(HOSTKEY),
            "events.subscribe": {"subscribed": True},
        }
        self.errors = {}              # method -> JSON-RPC error object
        self.raw = {}                 # method -> bytes sent instead of a reply
        self.silent = set()           # methods never answered
        self.events = []              # sent after the events.subscribe reply
        self.after_create = []        # events sent after a create reply
        self.close_after_events = True
        self.close_on = set()         # close the connection instead of answering
        self.close_after_raw = False  # close the connection after sending a raw reply
        self.requests = []
        self.connections = 0
        self._stop = threading.Event()
        self._threads = []
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.bind(self.path)
        self._sock.listen(16)
        self._sock.settimeout(0.05)
        t = threading.Thread(target=self._accept_loop, daemon=True)
        t.start()
        self._threads.append(t)

    def stop(self):
        self._stop.set()
        for t in self._threads:
            t.join(5)
        self._sock.close()

    def _accept_loop(self):
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self.connections += 1
            t = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            t.start()
            self._threads.append(t)

    @staticmethod
    def _send(conn, obj):
        try:
            conn.sendall((json.dumps(obj) + "\n").encode())
        except OSError:
            pass  # wsctl may leave early (a bad first reply): not the server's concern

    def _serve(self, conn):
        buf = b""
        subscribed = False
        with conn:
            while not self._stop.is_set():
                r, _, _ = select.select([conn], [], [], 0.05)
                if not r:
                    continue
                try:
                    data = conn.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                buf += data
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    req = json.loads(line)
                    self.requests.append(req)
                    m = req.get("method")
                    if m in self.close_on:
                        return
                    if m in self.silent:
                        continue
                    if m in self.raw:
                        try:
                            conn.sendall(self.raw[m])
                        except OSError:
                            return
                        if self.close_after_raw:
                            return
                        continue
                    if m in self.errors:
                        self._send(conn, {"jsonrpc": "2.0", "id": req["id"],
                                          "error": self.errors[m]})
                        continue
                    self._send(conn, {"jsonrpc": "2.0", "id": req["id"],
                                      "result": self.results[m]})
                    if m == "events.subscribe":
                        subscribed = True
                        for ev in self.events:
                            self._send(conn, {"jsonrpc": "2.0", "method": "event",
                                              "params": ev})
                        if self.close_after_events and self.events:
                            return
                    if m == "workspace.create" and subscribed:
                        for ev in self.after_create:
                            self._send(conn, {"jsonrpc": "2.0", "method": "event",
                                              "params": ev})

    def methods(self):
        return [r.get("method") for r in self.requests]


class WsctlTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.d = FakeDaemon(self.tmp.name)

    def tearDown(self):
        self.d.stop()
        self.tmp.cleanup()

    def run_wsctl(self, *args, env=None, timeout=20, socket_path=True):
        argv = [WSCTL] + (["--socket", self.d.path] if socket_path else []) + list(args)
        e = dict(os.environ)
        e.pop("WORKSPACED_SOCKET", None)
        if env:
            e.update(env)
        p = subprocess.run(argv, capture_output=True, text=True, env=e, timeout=timeout)
        return p.returncode, p.stdout, p.stderr

    # ---- help, version, usage errors ----

    def test_help_and_version(self):
        for args in (["--help"], ["help"], ["-h"]):
            rc, out, err = self.run_wsctl(*args)
            self.assertEqual(rc, 0, err)
            for word in ("create", "list", "show", "info", "hostkey", "events",
                         "workspace.create", "declare a new workspace"):
                self.assertIn(word, out)
        for cmd in ("create", "list", "show", "info", "hostkey", "events"):
            rc, out, _ = self.run_wsctl(cmd, "--help")
            self.assertEqual(rc, 0)
            self.assertIn("Usage: wsctl " + cmd, out)
            rc2, out2, _ = self.run_wsctl("help", cmd)
            self.assertEqual((rc2, out2), (0, out))
        rc, out, _ = self.run_wsctl("--version")
        self.assertEqual(rc, 0)
        self.assertRegex(out, r"^wsctl \d+\.\d+\.\d+ \(protocol 1\)\n$")
        self.assertEqual(self.d.connections, 0)

    def test_usage_errors_exit_2_without_contacting_the_daemon(self):
        cases = [
            ([], "no command"),
            (["frobnicate"], "unknown command 'frobnicate'"),
            (["list", "--bogus"], "unknown option '--bogus'"),
            (["list", "-x"], "unknown option '-x'"),
            (["create", "-dev"], "unknown option '-dev' (long options start with '--')"),
            (["create", "dev", "--type", "vm", "-dry-run"], "unknown option '-dry-run'"),
            (["show"], "needs a workspace NAME"),
            (["hostkey"], "needs a workspace NAME"),
            (["show", "a", "b"], "unexpected argument 'b'"),
            (["list", "extra"], "unexpected argument 'extra'"),
            (["create", "dev"], "--type"),
            (["create", "dev", "--type", "docker"], "vm, container or incus"),
            (["create", "dev", "--type", "vm", "--verify", "maybe"], "none, parse, eval or build"),
            (["create", "dev", "--type", "vm", "--dry-run", "--wait-hostkey"], "exclude"),
            (["list", "--replace"], "does not apply to 'list'"),
            (["list", "--names", "--json"], "exclude"),
            (["info", "--timeout", "soon"], "--timeout"),
            (["info", "--timeout"], "needs a value"),
            (["show", ""], "empty"),
        ]
        for args, text in cases:
            with self.subTest(args=args):
                rc, out, err = self.run_wsctl(*args)
                self.assertEqual(rc, 2, (args, out, err))
                self.assertTrue(err.startswith("wsctl: "), err)
                self.assertIn(text, err)
                self.assertEqual(out, "")
        self.assertEqual(self.d.requests, [])

    def test_usage_error_hint_names_the_command(self):
        """An option error met while options are read still points at the command's --help."""
        for args, hint in ((["create", "--bogus", "x"], "Try 'wsctl create --help'."),
                           (["list", "--timeout"], "Try 'wsctl list --help'."),
                           (["--bogus"], "Try 'wsctl --help'."),
                           (["--bogus", "show", "a"], "Try 'wsctl show --help'.")):
            with self.subTest(args=args):
                rc, out, err = self.run_wsctl(*args)
                self.assertEqual(rc, 2, err)
                self.assertEqual(err.splitlines()[-1], hint)
        self.assertEqual(self.d.requests, [])

    # ---- reaching the daemon ----

    def test_unreachable_exit_69_names_socket(self):
        missing = os.path.join(self.tmp.name, "nobody-home.sock")
        rc, out, err = self.run_wsctl("--socket", missing, "list", socket_path=False)
        self.assertEqual(rc, 69)
        self.assertEqual(out, "")
        self.assertIn(missing, err)
        self.assertIn("systemctl --user start workspaced.socket", err)
        self.assertIn("workspaced --repo DIR", err)

    def test_socket_from_environment(self):
        rc, out, err = self.run_wsctl("list", "--names", socket_path=False,
                                      env={"WORKSPACED_SOCKET": self.d.path})
        self.assertEqual(rc, 0, err)
        self.assertEqual(out, "dev\nbuilder-long\ninc\n")
        rt = os.path.join(self.tmp.name, "rt")
        os.mkdir(rt)
        rc, out, err = self.run_wsctl("info", socket_path=False,
                                      env={"XDG_RUNTIME_DIR": rt})
        self.assertEqual(rc, 69)
        self.assertIn(os.path.join(rt, "workspaced.sock"), err)
        os.symlink(self.d.path, os.path.join(rt, "workspaced.sock"))
        rc, out, err = self.run_wsctl("info", socket_path=False, env={"XDG_RUNTIME_DIR": rt})
        self.assertEqual(rc, 0, err)

    def test_daemon_closes_without_reply(self):
        self.d.close_on.add("workspace.list")
        rc, _, err = self.run_wsctl("list")
        self.assertEqual(rc, 69)
        self.assertIn("closed the connection", err)

    def test_timeout(self):
        self.d.silent.add("workspace.show")
        t0 = time.monotonic()
        rc, _, err = self.run_wsctl("--timeout", "0.4", "show", "dev")
        self.assertEqual(rc, 1)
        self.assertIn("no reply", err)
        self.assertLess(time.monotonic() - t0, 5)

    def test_info_is_pipelined_with_the_request(self):
        rc, _, err = self.run_wsctl("show", "dev")
        self.assertEqual(rc, 0, err)
        self.assertEqual(self.d.methods(), ["daemon.info", "workspace.show"])
        self.assertEqual(self.d.requests[1]["params"], {"name": "dev"})
        for r in self.d.requests:
            self.assertEqual(r["jsonrpc"], "2.0")
        self.assertEqual(self.d.connections, 1)

    def test_protocol_mismatch_refused(self):
        self.d.results["daemon.info"]["protocol"] = 2
        rc, out, err = self.run_wsctl("list")
        self.assertEqual(rc, 1)
        self.assertEqual(out, "")
        self.assertIn("protocol 2", err)
        self.assertIn("protocol 1", err)

    def test_protocol_mismatch_never_sends_a_write(self):
        self.d.results["daemon.info"]["protocol"] = 2
        for args in (("create", "dev", "--type", "container"), ("hostkey", "dev")):
            rc, out, err = self.run_wsctl(*args)
            self.assertEqual(rc, 1)
            self.assertIn("protocol 2", err)
        self.assertEqual(self.d.methods(), ["daemon.info", "daemon.info"])

    # ---- list ----

    def test_list_table_alignment(self):
        rc, out, err = self.run_wsctl("list")
        self.assertEqual(rc, 0, err)
        lines = out.splitlines()
        self.assertEqual(len(lines), 4)
        header = lines[0]
        names = header.split()
        self.assertEqual(names, ["NAME", "TYPE", "IP", "UNIT", "STATE", "AUTOSTART",
                                 "HOSTKEY", "PROBLEMS"])
        starts = [header.index(n) for n in names]
        for line in lines:
            self.assertEqual(line, line.rstrip(), "trailing blanks")
            for s in starts[1:]:
                self.assertEqual(line[s - 2:s], "  ", line)
                self.assertNotEqual(line[s], " ", line)
        cells = [[line[a:b].strip() for a, b in zip(starts, starts[1:] + [None])]
                 for line in lines[1:]]
        self.assertEqual(cells[0], ["dev", "container", "192.168.83.50", "container@dev.service",
                                    "active/running", "no", "no", "-"])
        self.assertEqual(cells[1], ["builder-long", "vm", "192.168.83.10",
                                    "microvm@builder-long.service", "-", "yes", "yes",
                                    "IP_DUPLICATE,IP_OUT_OF_RANGE"])
        self.assertEqual(cells[2][0:3], ["inc", "incus", "?"])

    def test_list_json_and_names(self):
        rc, out, err = self.run_wsctl("list", "--json")
        self.assertEqual(rc, 0, err)
        self.assertEqual(json.loads(out), LIST)
        rc, out, err = self.run_wsctl("--json", "list")
        self.assertEqual(json.loads(out), LIST)
        rc, out, err = self.run_wsctl("list", "--names")
        self.assertEqual((rc, out), (0, "dev\nbuilder-long\ninc\n"))

    def test_list_empty(self):
        self.d.results["workspace.list"] = {"workspaces": []}
        rc, out, _ = self.run_wsctl("list")
        self.assertEqual(rc, 0)
        self.assertIn("No workspaces", out)
        rc, out, _ = self.run_wsctl("list", "--names")
        self.assertEqual((rc, out), (0, ""))

    def test_control_characters_are_not_printed(self):
        self.d.results["workspace.list"] = {"workspaces": [dict(DEV, name="ev\x1b[2Jil")]}
        rc, out, _ = self.run_wsctl("list")
        self.assertEqual(rc, 0)
        self.assertNotIn("\x1b", out)
        self.assertIn("ev?[2Jil", out)

    # ---- show, info, hostkey ----

    def test_show(self):
        rc, out, err = self.run_wsctl("show", "dev")
        self.assertEqual(rc, 0, err)
        kv = {}
        for line in out.splitlines():
            if ":" in line and not line.startswith(" "):
                k, v = line.split(":", 1)
                kv[k] = v.strip()
        self.assertEqual(kv["name"], "dev")
        self.assertEqual(kv["ip"], "192.168.83.50")
        self.assertEqual(kv["unit"], "container@dev.service")
        self.assertEqual(kv["state"], "active (running)")
        self.assertEqual(kv["source"], "machines/atlas/default.nix:18")
        self.assertEqual(kv["hostKeyFile"],
                         "/home/u/sandboxed/dev/ssh-host-keys/ssh_host_ed25519_key.pub (exists)")
        self.assertEqual(kv["hostKey"], "none")
        self.assertIn("  passHostGpu = true\n", out)
        self.assertEqual(kv["problems"], "none")
        rc, out, _ = self.run_wsctl("show", "dev", "--json")
        self.assertEqual(json.loads(out), SHOW)

    def test_show_problems_and_ip_expression(self):
        ws = dict(LIST["workspaces"][2], problems=[{"kind": "CONFIG_MISSING",
                                                     "message": "no such file"}])
        self.d.results["workspace.show"] = ws
        rc, out, _ = self.run_wsctl("show", "inc")
        self.assertEqual(rc, 0)
        self.assertIn("(not a literal: base + \".91\")", out)
        self.assertIn("problems:\n  CONFIG_MISSING: no such file\n", out)

    def test_not_found_error(self):
        self.d.errors["workspace.show"] = {"code": 1004, "message": "no workspace named 'nope'",
                                           "data": {"kind": "NOT_FOUND", "name": "nope"}}
        rc, out, err = self.run_wsctl("show", "nope")
        self.assertEqual(rc, 1)
        self.assertEqual(out, "")
        self.assertEqual(err, "wsctl: no workspace named 'nope' (NOT_FOUND)\n")

    def test_info(self):
        rc, out, err = self.run_wsctl("info")
        self.assertEqual(rc, 0, err)
        self.assertRegex(out, r"(?m)^version: +0\.1\.0$")
        self.assertRegex(out, r"(?m)^repo: +/repo$")
        self.assertRegex(out, r"(?m)^range vm: +192\.168\.83\.10 - 192\.168\.83\.49$")
        self.assertRegex(out, r"(?m)^uptime: +0d 01:02:05$")
        rc, out, _ = self.run_wsctl("info", "--json")
        self.assertEqual(json.loads(out), INFO)
        self.assertEqual(self.d.methods().count("daemon.info"), 2)

    def test_hostkey(self):
        rc, out, err = self.run_wsctl("hostkey", "dev", "--replace")
        self.assertEqual(rc, 0, err)
        self.assertEqual(self.d.requests[-1]["params"], {"name": "dev", "replace": True})
        self.assertIn("host key registered", out)
        self.assertIn("sudo nixos-rebuild switch --flake /repo#atlas", out)
        rc, out, _ = self.run_wsctl("hostkey", "dev", "--json")
        self.assertEqual(json.loads(out), HOSTKEY)
        self.assertEqual(self.d.requests[-1]["params"], {"name": "dev"})

    def test_hostkey_mismatch_error(self):
        self.d.errors["workspace.hostkey"] = {
            "code": 1032, "message": "a different key is already registered for 'dev'",
            "data": {"kind": "HOSTKEY_MISMATCH"}}
        rc, _, err = self.run_wsctl("hostkey", "dev")
        self.assertEqual(rc, 1)
        self.assertIn("(HOSTKEY_MISMATCH)", err)

    # ---- create ----

    def test_create_prints_result_and_next_steps(self):
        rc, out, err = self.run_wsctl("create", "dev", "--type", "container")
        self.assertEqual(rc, 0, err)
        self.assertEqual(self.d.methods(), ["daemon.info", "workspace.create"])
        self.assertEqual(self.d.requests[1]["params"], {"name": "dev", "type": "container"})
        self.assertIn("192.168.83.50", out)
        self.assertRegex(out, r"(?m)^  files: +machines/atlas/workspaces/dev\.nix\n +"
                              r"machines/atlas/default\.nix$")
        self.assertRegex(out, r"(?m)^  verify: +parse: ok$")
        self.assertRegex(out, r"(?m)^  staged: +yes$")
        self.assertNotIn("stagedNote", out)
        self.assertIn("sudo nixos-rebuild switch --flake /repo#atlas", out)
        self.assertIn("sudo systemctl start container@dev.service", out)
        self.assertIn("ssh workspace-dev", out)

    def test_create_options_and_privilege_command(self):
        self.d.results["daemon.info"]["privilegeCommand"] = "doas"
        self.d.results["daemon.info"]["repo"] = "/home/me/my flake"
        rc, out, err = self.run_wsctl("create", "dev", "--type", "container", "--ip",
                                      "192.168.83.60", "--autostart", "--verify", "none")
        self.assertEqual(rc, 0, err)
        self.assertEqual(self.d.requests[1]["params"],
                         {"name": "dev", "type": "container", "ip": "192.168.83.60",
                          "autoStart": True, "verify": "none"})
        self.assertIn("doas nixos-rebuild switch --flake '/home/me/my flake#atlas'", out)
        self.assertIn("doas systemctl start container@dev.service", out)

    def test_create_dry_run_shows_diff(self):
        diff = "--- a/machines/atlas/default.nix\n+++ b/machines/atlas/default.nix\n@@ -1 +1,2 @@\n+  dev = 1;\n"
        self.d.results["workspace.create"] = dict(CREATE, staged=False, diff=diff, files=[])
        rc, out, err = self.run_wsctl("create", "dev", "--type", "container", "--dry-run")
        self.assertEqual(rc, 0, err)
        self.assertEqual(self.d.requests[1]["params"]["dryRun"], True)
        self.assertIn("Dry run", out)
        self.assertIn(diff, out)
        self.assertNotIn("nixos-rebuild", out)

    def test_create_staged_note(self):
        self.d.results["workspace.create"] = dict(
            CREATE, staged=False, stagedNote="default.nix is not tracked by git")
        rc, out, err = self.run_wsctl("create", "dev", "--type", "container")
        self.assertEqual(rc, 0, err)
        self.assertRegex(out, r"(?m)^  staged: +no \(default.nix is not tracked by git\)$")

    def test_create_json(self):
        rc, out, err = self.run_wsctl("create", "dev", "--type", "vm", "--json")
        self.assertEqual(rc, 0, err)
        self.assertEqual(json.loads(out), CREATE)

    def test_create_errors_with_location(self):
        self.d.errors["workspace.create"] = {
            "code": 1010, "message": "unexpected '}'",
            "data": {"kind": "CONFIG_UNPARSABLE", "file": "machines/atlas/default.nix",
                     "line": 3, "column": 7}}
        rc, out, err = self.run_wsctl("create", "dev", "--type", "container")
        self.assertEqual(rc, 1)
        self.assertEqual(out, "")
        self.assertEqual(err, "wsctl: machines/atlas/default.nix:3:7: unexpected '}' "
                              "(CONFIG_UNPARSABLE)\n")
        self.d.errors["workspace.create"] = {
            "code": 1040, "message": "build failed", "data": {
                "kind": "VERIFY_FAILED", "level": "build", "exitStatus": 1,
                "log": "error: attribute 'x' missing\n  at line 3"}}
        rc, _, err = self.run_wsctl("create", "dev", "--type", "container")
        self.assertEqual(rc, 1)
        self.assertIn("build failed (VERIFY_FAILED)", err)
        self.assertIn("    error: attribute 'x' missing\n", err)
        self.d.errors["workspace.create"] = {"code": -32602, "message": "bad params"}
        rc, _, err = self.run_wsctl("create", "dev", "--type", "container")
        self.assertEqual(rc, 1)
        self.assertIn("bad params (invalid params)", err)

    def test_create_wait_hostkey(self):
        self.d.after_create = [
            {"type": "verify.progress", "name": "dev", "line": "building..."},
            {"type": "hostkey.registered", "name": "other", "fingerprint": "SHA256:nope"},
            {"type": "hostkey.registered", "name": "dev", "fingerprint": FINGERPRINT,
             "hostKey": HOSTKEY["hostKey"]},
        ]
        rc, out, err = self.run_wsctl("create", "dev", "--type", "container", "--wait-hostkey",
                                      "--timeout", "10")
        self.assertEqual(rc, 0, err)
        m = self.d.methods()
        self.assertLess(m.index("events.subscribe"), m.index("workspace.create"))
        self.assertIn("Host key registered for 'dev': " + FINGERPRINT, out)
        self.assertNotIn("SHA256:nope", out)
        self.assertIn("nixos-rebuild switch --flake /repo#atlas", out)

    def test_create_wait_hostkey_times_out(self):
        t0 = time.monotonic()
        rc, out, err = self.run_wsctl("create", "dev", "--type", "container", "--wait-hostkey",
                                      "--timeout", "0.5")
        self.assertEqual(rc, 1)
        self.assertIn("container@dev.service", out)
        self.assertIn("no host key", err)
        self.assertIn("wsctl hostkey dev", err)
        self.assertLess(time.monotonic() - t0, 5)

    # ---- events ----

    def test_events_until_eof(self):
        self.d.events = [
            {"type": "workspace.created", "name": "dev", "workspace": DEV},
            {"type": "verify.finished", "name": "dev", "level": "parse", "ok": True},
            {"type": "config.changed", "file": "machines/atlas/default.nix"},
            {"type": "hostkey.mismatch", "name": "dev", "old": "SHA256:a", "new": "SHA256:b c"},
        ]
        rc, out, err = self.run_wsctl("events")
        self.assertEqual(rc, 0, err)
        self.assertEqual(out.splitlines(), [
            "workspace.created dev",
            "verify.finished dev level=parse ok=true",
            "config.changed - file=machines/atlas/default.nix",
            'hostkey.mismatch dev old=SHA256:a new="SHA256:b c"',
        ])
        rc, out, err = self.run_wsctl("events", "--json")
        self.assertEqual(rc, 0, err)
        self.assertEqual([json.loads(l) for l in out.splitlines()], self.d.events)

    def test_events_sigint_exits_0(self):
        self.d.events = [{"type": "workspace.created", "name": "dev"}]
        self.d.close_after_events = False
        p = subprocess.Popen([WSCTL, "--socket", self.d.path, "events"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            line = p.stdout.readline()
            self.assertEqual(line, "workspace.created dev\n")
            p.send_signal(signal.SIGINT)
            self.assertEqual(p.wait(10), 0)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
            p.stdout.close()
            p.stderr.close()

    # ---- shell completion ----

    def bash_complete(self, line):
        """Runs the bash completion function on @line (completing its last word)."""
        comp = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                            "completions", "wsctl.bash")
        script = ('source "$1"; read -ra COMP_WORDS <<< "$2"; '
                  '[[ $2 == *" " ]] && COMP_WORDS+=(""); '
                  'COMP_CWORD=$((${#COMP_WORDS[@]} - 1)); _wsctl; '
                  'printf "%s\\n" "${COMPREPLY[@]}"')
        env = dict(os.environ, PATH=os.path.dirname(os.path.abspath(WSCTL)) + ":" +
                   os.environ.get("PATH", ""))
        env.pop("WORKSPACED_SOCKET", None)
        p = subprocess.run(["bash", "--norc", "-c", script, "bash", comp, line],
                           capture_output=True, text=True, env=env, timeout=20)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stderr, "")
        return [w for w in p.stdout.split("\n") if w]

    def test_bash_completion(self):
        self.assertEqual(self.bash_complete("wsctl sh"), ["show"])
        self.assertEqual(self.bash_complete("wsctl create dev --type "),
                         ["vm", "container", "incus"])
        self.assertEqual(self.bash_complete("wsctl create dev --verify p"), ["parse"])
        self.assertIn("--wait-hostkey", self.bash_complete("wsctl create dev --"))
        self.assertEqual(self.bash_complete("wsctl list --na"), ["--names"])
        self.assertEqual(self.bash_complete("wsctl --socket %s show " % self.d.path),
                         ["dev", "builder-long", "inc"])
        self.assertEqual(self.bash_complete("wsctl --socket %s hostkey b" % self.d.path),
                         ["builder-long"])
        self.assertEqual(self.bash_complete("wsctl --socket %s show dev " % self.d.path), [])
        missing = os.path.join(self.tmp.name, "down.sock")
        self.assertEqual(self.bash_complete("wsctl --socket %s show " % missing), [])

    # ---- malformed replies ----

    def test_malformed_replies_never_crash(self):
        bad = [
            b"this is not json\n",
            b"[1,2,3]\n",
            b'{"jsonrpc":"2.0","id":2}\n',
            b'{"jsonrpc":"2.0","id":2,"result":42}\n',
            b'{"jsonrpc":"2.0","id":2,"result":{"workspaces":"many"}}\n',
            b'{"jsonrpc":"2.0","id":2,"result":{"workspaces":[1,null,{"name":7},{"problems":{}}]}}\n',
            b'{"jsonrpc":"2.0","id":2,"error":"nope"}\n',
            b'{"jsonrpc":"2.0","id":2,"error":{"data":[1]}}\n',
            b'{"jsonrpc":"2.0","id":2,"result":{"workspaces":[{"name":"a","state":[],"source":1,'
            b'"extra":[],"unit":5,"hostKey":{}}]}}\n',
            b'{"jsonrpc":"2.0","id":2,"res',
        ]
        for raw in bad:
            with self.subTest(raw=raw):
                self.d.raw["workspace.list"] = raw
                for args in (["--timeout", "1", "list"], ["--timeout", "1", "list", "--names"]):
                    rc, out, err = self.run_wsctl(*args)
                    self.assertIn(rc, (0, 1), (raw, out, err))
                    self.assertNotIn("Traceback", err)
                    if rc == 1:
                        self.assertTrue(err.startswith("wsctl: "), err)
        self.d.raw.clear()
        for info in (b"garbage\n", b'{"jsonrpc":"2.0","id":1,"result":[]}\n',
                     b'{"jsonrpc":"2.0","id":1,"result":{"protocol":"one"}}\n'):
            with self.subTest(info=info):
                self.d.raw["daemon.info"] = info
                rc, out, err = self.run_wsctl("create", "dev", "--type", "vm")
                self.assertEqual(rc, 1, (info, out, err))
                self.assertTrue(err.startswith("wsctl: "), err)
        self.d.raw.clear()
        self.d.results["workspace.create"] = {"workspace": 3, "files": {"x": 1}, "verify": []}
        rc, out, err = self.run_wsctl("create", "dev", "--type", "vm")
        self.assertEqual(rc, 0, err)

    def test_reply_to_another_request_then_close(self):
        """A reply whose id names no request sent, then the connection closed: a reply
        that is not valid (1), not a daemon that closed without replying (69)."""
        self.d.raw["workspace.list"] = b'{"jsonrpc":"2.0","id":99999,"result":{"workspaces":[]}}\n'
        self.d.close_after_raw = True
        rc, out, err = self.run_wsctl("list")
        self.assertEqual(rc, 1, (out, err))
        self.assertIn("never sent", err)
        self.d.raw.clear()
        self.d.close_on.add("workspace.list")  # a close with no reply at all stays 69
        rc, out, err = self.run_wsctl("list")
        self.assertEqual(rc, 69, (out, err))


if __name__ == "__main__":
    if not WSCTL or not os.access(WSCTL, os.X_OK):
        sys.exit("set WSCTL to the wsctl binary")
    unittest.main()
