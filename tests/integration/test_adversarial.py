# SPDX-License-Identifier: MIT
"""Hostile and careless input against the real daemon: malformed JSON-RPC, names and
addresses that mean something in Nix, symbolic links and odd files in the repository and
the sandbox root, races with hand edits and signals, floods of connections and requests.
Every failure must leave the repository, its index and the daemon's state byte-identical,
and the daemon must stay up and responsive."""
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time

from wslib import DaemonTest, Conn, fixture, git, have, nix_parse_ok, main

MACHINE = fixture("03-dotted-top.nix")

HK_MACHINE = b"""{ config, lib, pkgs, ... }:
{
  sandboxed-workspace = {
    enable = true;
    workspaces.alpha = {
      type = "container";
      config = ./workspaces/alpha.nix;
      ip = "192.168.83.50";
    };
  };
}
"""


def keygen(dirpath, name="key"):
    p = os.path.join(dirpath, name)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "root@ws", "-f", p],
                   check=True)
    with open(p + ".pub") as f:
        text = f.read()
    typ, b64 = text.split()[:2]
    return text, typ + " " + b64


class Base(DaemonTest):
    def setUp(self):
        super().setUp()
        self.outside = tempfile.mkdtemp(prefix="ws-outside-")

    def tearDown(self):
        reports = []
        for d in list(self.daemons):
            self.daemons.remove(d)
            try:
                d.stop(expect_code=None)
            except AssertionError as e:
                reports.append(str(e))
        super().tearDown()
        shutil.rmtree(self.outside, ignore_errors=True)
        # a sanitizer report or a daemon that ignored SIGTERM fails the test
        self.assertEqual(reports, [])

    def snap(self, repo):
        """Like Repo.snapshot(), but symbolic links are recorded as links (a dangling
        one would break Repo.snapshot()) and never followed."""
        out = {}
        for base in (repo.path, repo.state_dir):
            for root, dirs, files in os.walk(base):
                if root == os.path.join(repo.path, ".git"):
                    dirs[:] = []
                    files = [f for f in files if f == "index"]
                for n in dirs + files:
                    p = os.path.join(root, n)
                    if os.path.islink(p):
                        out[p] = b"<link>" + os.readlink(p).encode()
                    elif os.path.isdir(p):
                        out[p + "/"] = b"<dir>"
                    else:
                        with open(p, "rb") as fh:
                            out[p] = fh.read()
        return out

    def assertSame(self, before, repo):
        after = self.snap(repo)
        self.assertEqual(sorted(before), sorted(after), "files appeared or disappeared")
        for k in before:
            self.assertEqual(before[k], after[k], "%s changed" % k)

    def alive(self, d, within=2.0):
        """The daemon answers daemon.info within @within seconds (connections closed just
        before may still count against its limit for a moment: BUSY is retried)."""
        self.assertIsNone(d.proc.poll(), "the daemon exited:\n" + d.output())
        end = time.time() + within
        while True:
            c = Conn(d.socket, timeout=within)
            try:
                r = c.call("daemon.info")
            except (ConnectionResetError, EOFError):
                r = {"error": {"code": 1051}}
            finally:
                c.close()
            if "error" in r and r["error"]["code"] == 1051 and time.time() < end:
                time.sleep(0.05)
                continue
            break
        self.assertIn("result", r)

    def assertParses(self, repo, rel=None):
        ok = nix_parse_ok(os.path.join(repo.path, rel or repo.machine_rel))
        self.assertIn(ok, (True, None), "%s does not parse" % (rel or repo.machine_rel))

    def raw(self, d, line, timeout=10):
        """Send one raw line, return the raw reply line."""
        c = Conn(d.socket, timeout=timeout)
        try:
            c.send_raw(line if isinstance(line, bytes) else line.encode())
            return c.recv_line()
        finally:
            c.close()

    def names(self, d):
        return [w["name"] for w in self.assertOk(d.call("workspace.list"))["workspaces"]]


class JsonRpcInput(Base):
    def setUp(self):
        super().setUp()
        self.repo, self.d = self.start(MACHINE)

    def test_wrong_param_types(self):
        """Every parameter of the wrong JSON type is -32602 and writes nothing."""
        before = self.snap(self.repo)
        bad = [{"name": 5, "type": "vm"}, {"name": ["x"], "type": "vm"},
               {"name": None, "type": "vm"}, {"name": {"a": 1}, "type": "vm"},
               {"name": "x", "type": 1}, {"name": "x", "type": None},
               {"name": "x", "type": "vm", "ip": 3232256838},
               {"name": "x", "type": "vm", "ip": ["192.168.83.20"]},
               {"name": "x", "type": "vm", "autoStart": "yes"},
               {"name": "x", "type": "vm", "autoStart": 1},
               {"name": "x", "type": "vm", "dryRun": "false"},
               {"name": "x", "type": "vm", "verify": 0}]
        for params in bad:
            r = self.d.call("workspace.create", params)
            self.assertErr(r, -32602)
        for params in ([], "dev", 5, None):
            r = self.d.call("workspace.show", params)
            self.assertIn("error", r, params)
        self.assertSame(before, self.repo)
        self.alive(self.d)

    def test_name_with_nul_escape_is_not_truncated(self):
        """A name with an escaped NUL (`dev\\u0000x`) is NAME_INVALID: it must never be
        cut at the NUL and created as `dev`."""
        before = self.snap(self.repo)
        r = self.d.call("workspace.create", {"name": "dev\u0000x", "type": "vm"})
        self.assertErr(r, 1001, "NAME_INVALID")
        self.assertSame(before, self.repo)
        self.assertNotIn("dev", self.names(self.d))

    def test_type_with_nul_escape(self):
        """A type with an escaped NUL (`vm\\u0000x`) is TYPE_INVALID, not read as `vm`."""
        before = self.snap(self.repo)
        r = self.d.call("workspace.create", {"name": "nul1", "type": "vm\u0000junk"})
        self.assertErr(r, 1002, "TYPE_INVALID")
        self.assertSame(before, self.repo)

    def test_ip_with_nul_escape(self):
        """An ip with an escaped NUL is IP_INVALID, not read as the prefix before it."""
        before = self.snap(self.repo)
        r = self.d.call("workspace.create", {"name": "nul2", "type": "vm",
                                             "ip": "192.168.83.20\u0000; evil"})
        self.assertErr(r, 1005, "IP_INVALID")
        self.assertSame(before, self.repo)

    def test_show_with_nul_escape(self):
        """workspace.show of `docs\\u0000x` is NOT_FOUND (or NAME_INVALID), never `docs`."""
        r = self.d.call("workspace.show", {"name": "docs\u0000x"})
        self.assertIn("error", r, "docs\\u0000x was answered as docs: %r" % r)

    def test_invalid_utf8(self):
        """Invalid UTF-8 bytes in a request get an error (parse error or NAME_INVALID), the
        connection keeps working, nothing is written."""
        before = self.snap(self.repo)
        c = self.d.conn()
        c.send_raw(b'{"jsonrpc":"2.0","id":1,"method":"workspace.create",'
                   b'"params":{"name":"a\xff\xfeb","type":"vm"}}\n')
        for line in (c.recv_line(),):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError:
                self.fail("the reply is not UTF-8 (the bytes were echoed): %r" % line[:300])
            self.assertIn("error", json.loads(line))
        c.send_raw(b'{"jsonrpc":"2.0","id":"\xc3\x28","method":"daemon.info"}\n')
        line = c.recv_line()
        try:
            line.decode("utf-8")
        except UnicodeDecodeError:
            self.fail("the reply is not UTF-8 (the bytes were echoed): %r" % line[:300])
        # forms json-c's own check lets through: overlong (C0 80, E0 80 80), an encoded
        # surrogate (ED A0 80), above U+10FFFF (F4 90 80 80): -32700, nothing echoed
        for bad in (b"\xc0\x80", b"\xc0\xae", b"\xe0\x80\x80", b"\xed\xa0\x80",
                    b"\xf4\x90\x80\x80", b"\xf8\x88\x80\x80\x80"):
            c.send_raw(b'{"jsonrpc":"2.0","id":"' + bad + b'","method":"nope"}\n')
            line = c.recv_line()
            line.decode("utf-8")  # valid UTF-8, or this raises
            self.assertEqual(json.loads(line)["error"]["code"], -32700, (bad, line))
        # well-formed multi-byte text is fine (2, 3 and 4 bytes)
        c.send_raw('{"jsonrpc":"2.0","id":"é€😀","method":"nope"}\n'.encode())
        r = json.loads(c.recv_line())
        self.assertEqual((r["id"], r["error"]["code"]), ("é€😀", -32601))
        # a NUL in the method name does not cut it short
        r = c.call("daemon.info\u0000junk")
        self.assertEqual(r["error"]["code"], -32601, r)
        c.send_raw(b'{"jsonrpc":"2.0","id":2,"method":"daemon.info"}\n')
        self.assertEqual(c.recv()["id"], 2)
        self.assertSame(before, self.repo)

    def test_deep_nesting(self):
        """100k levels of nested arrays: an error reply (no stack overflow), the daemon
        serves on."""
        c = self.d.conn()
        c.send_raw(b"[" * 100000 + b"]" * 100000 + b"\n")
        r = c.recv(timeout=10)
        self.assertIn("error", r if isinstance(r, dict) else r[0])
        c.send_raw(b'{"jsonrpc":"2.0","id":1,"params":' + b'{"a":' * 50000 + b'1' +
                   b'}' * 50000 + b',"method":"daemon.info"}\n')
        r = c.recv(timeout=10)
        self.assertIn("error", r)
        self.alive(self.d)

    def test_numbers_out_of_range(self):
        """Numbers like 1e999 give a valid JSON reply (never `inf`/`nan` on the wire)."""
        for line in ('{"jsonrpc":"2.0","id":1e999,"method":"daemon.info"}',
                     '{"jsonrpc":"2.0","id":-1e999,"method":"daemon.info"}',
                     '{"jsonrpc":"2.0","id":1,"method":"workspace.create",'
                     '"params":{"name":"x","type":"vm","autoStart":1e999}}'):
            raw = self.raw(self.d, line + "\n").decode()
            json.loads(raw, parse_constant=lambda s: self.fail("non-JSON constant %s in %s"
                                                               % (s, raw)))
            for bad in ("inf", "nan", "Infinity", "NaN"):
                self.assertNotIn(bad, raw.replace('"info"', ""), raw)
        self.alive(self.d)

    def test_ids_echoed_exactly(self):
        """Float ids and large integer ids come back as sent; booleans are -32600."""
        for ident in ("1.5", "-0.25", "9007199254740993", "-9223372036854775808", '"x\\u0000y"'):
            raw = self.raw(self.d, '{"jsonrpc":"2.0","id":%s,"method":"daemon.info"}\n' % ident)
            r = json.loads(raw)
            self.assertEqual(r["id"], json.loads(ident), raw)
            self.assertIn("result", r)
        for ident in ("true", "false", "[1]"):
            r = json.loads(self.raw(self.d, '{"jsonrpc":"2.0","id":%s,"method":"daemon.info"}\n'
                                    % ident))
            self.assertEqual(r["error"]["code"], -32600, ident)
            self.assertIsNone(r["id"])

    def test_id_beyond_int64(self):
        """An integer id beyond 64 bits is echoed exactly, or refused: never replaced by
        another number (a client would match the reply to the wrong request)."""
        ident = "100000000000000000000"
        r = json.loads(self.raw(self.d, '{"jsonrpc":"2.0","id":%s,"method":"daemon.info"}\n'
                                % ident))
        if "result" in r:
            self.assertEqual(r["id"], int(ident), "the reply carries another id")
        else:
            self.assertIn(r["error"]["code"], (-32600, -32700))

    def test_duplicate_keys(self):
        """Duplicate keys: whichever value wins, the daemon acts on one name and reports it."""
        raw = ('{"jsonrpc":"2.0","id":1,"method":"workspace.create",'
               '"params":{"name":"dupa","type":"vm","name":"dupb"}}\n')
        r = json.loads(self.raw(self.d, raw))
        if "result" in r:
            name = r["result"]["workspace"]["name"]
            self.assertIn(name, ("dupa", "dupb"))
            names = self.names(self.d)
            self.assertIn(name, names)
            self.assertEqual(len({"dupa", "dupb"} & set(names)), 1)
            self.assertParses(self.repo)
        self.alive(self.d)

    def test_huge_string(self):
        """A 900 KiB name is NAME_INVALID, written nowhere, and the reply stays small."""
        before = self.snap(self.repo)
        c = self.d.conn()
        c.send({"jsonrpc": "2.0", "id": 1, "method": "workspace.create",
                "params": {"name": "a" * 900000, "type": "incus"}})
        line = c.recv_line()
        r = json.loads(line)
        self.assertEqual(r["error"]["code"], 1001)
        self.assertLess(len(line), 64 * 1024, "the error echoes the whole name back")
        self.assertSame(before, self.repo)

    def test_verify_level_unknown(self):
        """An unknown verify level is refused (-32602) and nothing is written."""
        before = self.snap(self.repo)
        for level in ("everything", "", "BUILD", "parse ", "nonex"):
            r = self.d.call("workspace.create", {"name": "vv", "type": "vm", "verify": level})
            self.assertIn("error", r, level)
            self.assertEqual(r["error"]["code"], -32602, (level, r))
        self.assertSame(before, self.repo)

    def test_verify_level_with_nul_escape(self):
        """verify `none\\u0000x` is refused (-32602), not read as `none`."""
        before = self.snap(self.repo)
        r = self.d.call("workspace.create", {"name": "vv", "type": "vm",
                                             "verify": "none\u0000x"})
        self.assertErr(r, -32602)
        self.assertSame(before, self.repo)

    def test_subscribe_twice(self):
        """events.subscribe twice on one connection: each event still arrives once."""
        sub = self.d.conn()
        self.assertOk(sub.call("events.subscribe", id=1))
        self.assertOk(sub.call("events.subscribe", id=2))
        self.assertOk(self.d.create("twice", "vm"))
        ev = sub.recv(timeout=5)
        self.assertEqual(ev["params"]["type"], "workspace.created")
        try:
            extra = sub.recv(timeout=0.7)
        except OSError:
            return
        self.fail("event delivered twice: %r" % extra)


class NamesAndAddresses(Base):
    def test_nix_significant_names(self):
        """Names with Nix syntax in them are NAME_INVALID and nothing is written."""
        repo, d = self.start(MACHINE)
        before = self.snap(repo)
        for name in ('a"b', "${x}", "a;b", "''", "a\nb", "a b", "a/b", "..", "a.b",
                     "a\\b", "#", "a=b", "é", "\u0430pi"):
            r = d.create(name, "incus")
            self.assertErr(r, 1001, "NAME_INVALID")
        self.assertSame(before, repo)

    def test_keyword_names(self):
        """Names that are Nix keywords are valid names: created, quoted in the file so
        that it parses (`workspaces."if"`), and listed back under the same name."""
        repo, d = self.start(fixture("01-no-block.nix"))
        kws = ["if", "then", "else", "let", "in", "rec", "inherit", "with", "assert", "or"]
        failed = []
        for kw in kws:
            r = d.create(kw, "incus")
            if "result" not in r:
                failed.append((kw, r["error"]["message"]))
                continue
            if nix_parse_ok(os.path.join(repo.path, repo.machine_rel)) is False:
                failed.append((kw, "default.nix no longer parses:\n" +
                               repo.read(repo.machine_rel).decode()))
                break
        self.assertEqual(failed, [])
        self.assertEqual(sorted(self.names(d)), sorted(kws))

    def test_odd_ip_strings(self):
        """Addresses with spaces, leading zeros, trailing dots, IPv6, CIDR, hex are
        IP_INVALID; nothing is written."""
        repo, d = self.start(MACHINE)
        before = self.snap(repo)
        for ip in (" 192.168.83.70", "192.168.83.70 ", "192.168.83.070", "192.168.83.70.",
                   "192.168.83..70", "::1", "::ffff:192.168.83.70", "192.168.83",
                   "192.168.83.70/24", "0xc0.168.83.70", "192.168.83.7e1", "",
                   "192.168.83.+70", "192.168.83.-70", "192.168.83.70\n",
                   "192.168.83.4294967366", "\uff11\uff19\uff12.168.83.70"):
            r = d.create("ipx", "container", ip=ip)
            self.assertErr(r, 1005, "IP_INVALID")
        self.assertSame(before, repo)

    def test_batch_of_1000_creates(self):
        """A batch of 1000 creates: 1000 replies; every success has its own address and its
        entry in one parseable default.nix; every failure is RANGE_EXHAUSTED or BUSY (the
        per-connection limit of requests in flight) and wrote nothing."""
        repo, d = self.start(fixture("01-no-block.nix"))
        types = ("vm", "container", "incus")
        batch = [{"jsonrpc": "2.0", "id": i, "method": "workspace.create",
                  "params": {"name": "b%d" % i, "type": types[i % 3]}} for i in range(1000)]
        c = Conn(d.socket, timeout=50)
        t0 = time.time()
        c.send(batch)
        r = c.recv()
        self.assertIsInstance(r, list)
        self.assertEqual(len(r), 1000)
        ok = [x for x in r if "result" in x]
        errs = [x for x in r if "error" in x]
        self.assertEqual(sorted(x["id"] for x in r), list(range(1000)))
        self.assertGreater(len(ok), 0)
        self.assertLessEqual(len(ok), 120)
        self.assertTrue(all(x["error"]["code"] in (1007, 1051) for x in errs),
                        {x["error"]["code"] for x in errs})
        ips = [x["result"]["workspace"]["ip"] for x in ok]
        self.assertEqual(len(set(ips)), len(ok))
        self.assertParses(repo)
        made = sorted(x["result"]["workspace"]["name"] for x in ok)
        self.assertEqual(sorted(self.names(d)), made)
        on_disk = sorted(f[:-4] for f in os.listdir(os.path.join(repo.machine_dir, "workspaces")))
        self.assertEqual(on_disk, made, "workspace files of failed members were left behind")
        staged = git(repo.path, "diff", "--cached", "--name-only").split()
        self.assertEqual(len(staged), len(ok) + 1)
        self.assertLess(time.time() - t0, 40)


class RepoFiles(Base):
    def test_machine_file_symlink_inside_repo(self):
        """default.nix a symbolic link to a file inside the repository: the daemon either
        refuses (nothing changed) or edits the target; it never replaces the link by a
        regular file."""
        repo = self.make_repo(MACHINE)
        os.rename(os.path.join(repo.machine_dir, "default.nix"),
                  os.path.join(repo.machine_dir, "real.nix"))
        os.symlink("real.nix", os.path.join(repo.machine_dir, "default.nix"))
        git(repo.path, "add", "-A")
        git(repo.path, "commit", "-q", "-m", "link")
        repo, d = self.start(repo)
        before = self.snap(repo)
        r = d.create("lnk", "vm")
        link = os.path.join(repo.machine_dir, "default.nix")
        self.assertTrue(os.path.islink(link), "the symbolic link was replaced by a file")
        if "error" in r:
            self.assertSame(before, repo)
        else:
            self.assertIn(b"lnk", repo.read("machines/atlas/real.nix"))
            self.assertParses(repo, "machines/atlas/real.nix")

    def test_machine_file_symlink_outside_repo(self):
        """default.nix a symbolic link out of the repository: the file outside is never
        written; the request fails and the repository is unchanged."""
        target = os.path.join(self.outside, "machine.nix")
        with open(target, "wb") as f:
            f.write(MACHINE)
        repo = self.make_repo(MACHINE)
        link = os.path.join(repo.machine_dir, "default.nix")
        os.unlink(link)
        os.symlink(target, link)
        repo, d = self.start(repo)
        before = self.snap(repo)
        r = d.create("out", "vm")
        with open(target, "rb") as f:
            self.assertEqual(f.read(), MACHINE, "a file outside the repository was written")
        self.assertTrue(os.path.islink(link))
        self.assertIn("error", r, "a machine file outside the repository was edited")
        self.assertSame(before, repo)
        self.alive(d)

    def test_workspaces_dir_symlink_outside(self):
        """machines/HOST/workspaces a symbolic link to a directory outside the repository:
        nothing is written there; the create fails with the repository unchanged."""
        repo = self.make_repo(MACHINE)
        os.symlink(self.outside, os.path.join(repo.machine_dir, "workspaces"))
        repo, d = self.start(repo)
        before = self.snap(repo)
        r = d.create("esc", "vm")
        self.assertEqual(os.listdir(self.outside), [], "wrote through the link out of the repo")
        self.assertIn("error", r)
        self.assertSame(before, repo)

    def test_workspaces_is_a_file(self):
        """machines/HOST/workspaces a regular file: a clear error, nothing changed."""
        repo = self.make_repo(MACHINE, extra_files={"machines/atlas/workspaces": "not a dir\n"})
        repo, d = self.start(repo)
        before = self.snap(repo)
        r = d.create("wf", "vm")
        self.assertIn("error", r)
        self.assertIn("workspaces", r["error"]["message"])
        self.assertSame(before, repo)
        self.alive(d)

    def test_dangling_symlink_workspace_file(self):
        """workspaces/NAME.nix a dangling symbolic link: FILE_EXISTS, and the link's target
        is never created."""
        repo = self.make_repo(MACHINE)
        os.makedirs(os.path.join(repo.machine_dir, "workspaces"))
        target = os.path.join(self.outside, "planted.nix")
        os.symlink(target, os.path.join(repo.machine_dir, "workspaces", "dev.nix"))
        repo, d = self.start(repo)
        before = self.snap(repo)
        r = d.create("dev", "vm")
        self.assertFalse(os.path.lexists(target), "wrote through a dangling link")
        self.assertErr(r, 1013, "FILE_EXISTS")
        self.assertSame(before, repo)

    def test_readonly_machine_dir(self):
        """A read-only machine directory: a clear error, nothing changed, the daemon up."""
        if os.geteuid() == 0:
            self.skipTest("root ignores directory permissions")
        repo, d = self.start(MACHINE)
        os.chmod(repo.machine_dir, 0o555)
        try:
            before = self.snap(repo)
            r = d.create("ro", "vm")
            self.assertIn("error", r)
            self.assertSame(before, repo)
            self.alive(d)
        finally:
            os.chmod(repo.machine_dir, 0o755)

    def test_machine_file_deleted_while_running(self):
        """The machine file deleted under the running daemon: reads and creates fail with an
        error naming the file, nothing is created, the daemon stays up and recovers when
        the file comes back."""
        repo, d = self.start(MACHINE)
        self.assertOk(d.call("workspace.list"))
        os.unlink(os.path.join(repo.path, repo.machine_rel))
        time.sleep(0.3)
        before = self.snap(repo)
        r = d.create("gone", "vm")
        self.assertIn("error", r)
        self.assertIn("default.nix", r["error"]["message"])
        self.assertSame(before, repo)
        r = d.call("workspace.list")
        self.assertIn("error", r, "a deleted file still lists its workspaces")
        self.alive(d)
        repo.write(repo.machine_rel, MACHINE)
        time.sleep(0.3)
        self.assertEqual(sorted(self.names(d)), ["api", "docs"])
        self.assertOk(d.create("back", "vm"))
        self.assertParses(repo)

    def test_machine_file_12mb(self):
        """A 12 MB machine file (a huge comment): served and edited in reasonable time."""
        big = MACHINE.replace(b"  networking.sandbox",
                              b"  # " + b"x" * (12 * 1024 * 1024) + b"\n  networking.sandbox")
        repo, d = self.start(big)
        t0 = time.time()
        self.assertEqual(sorted(self.names(d)), ["api", "docs"])
        self.assertOk(d.create("bigf", "vm"))
        self.assertLess(time.time() - t0, 15)
        self.assertIn(b"x" * (12 * 1024 * 1024), repo.read(repo.machine_rel))
        self.alive(d)

    def test_machine_file_20mb(self):
        """A 20 MB machine file: either served, or refused with an application error
        (CONFIG_UNSUPPORTED, naming the size limit), never -32603 internal error;
        nothing written."""
        big = MACHINE.replace(b"  networking.sandbox",
                              b"  # " + b"x" * (20 * 1024 * 1024) + b"\n  networking.sandbox")
        repo, d = self.start(big)
        before = self.snap(repo)
        for r in (d.call("workspace.list"), d.create("bigf", "vm")):
            if "error" in r:
                self.assertNotEqual(r["error"]["code"], -32603, r)
                self.assertEqual(r["error"].get("data", {}).get("kind"), "CONFIG_UNSUPPORTED", r)
                self.assertSame(before, repo)
        self.alive(d)

    def test_bom(self):
        """A machine file starting with a UTF-8 BOM (which Nix refuses): CONFIG_UNPARSABLE,
        nothing written (never a file that Nix cannot parse presented as a success)."""
        repo, d = self.start(b"\xef\xbb\xbf" + MACHINE)
        before = self.snap(repo)
        r = d.create("bom", "vm")
        self.assertErr(r, 1010, "CONFIG_UNPARSABLE")
        self.assertSame(before, repo)

    def test_nul_byte_in_file(self):
        """A NUL byte in the machine file: either an error with nothing changed, or an edit
        that keeps every byte and still parses."""
        text = MACHINE.replace(b"  networking.sandbox", b"  # a\x00b\n  networking.sandbox")
        repo, d = self.start(text)
        before = self.snap(repo)
        r = d.create("nul", "vm")
        if "error" in r:
            self.assertSame(before, repo)
        else:
            out = repo.read(repo.machine_rel)
            self.assertIn(b"# a\x00b\n", out)
            self.assertIn(b"workspaces.nul", out)
            self.assertParses(repo)
        self.alive(d)

    def test_nul_byte_before_entries(self):
        """A NUL byte early in the file must not hide the entries after it from the daemon
        (the address of every entry stays taken)."""
        text = MACHINE.replace(b"  imports", b"  # \x00\n  imports")
        repo, d = self.start(text)
        r = d.create("nul2", "container")
        if "result" in r:
            self.assertNotIn(r["result"]["workspace"]["ip"], ("192.168.83.50", "192.168.83.51"))

    def test_cr_only_line_endings(self):
        """A file with CR-only line endings: the editor copies LF and CRLF layouts only, so
        the create is refused with CONFIG_UNSUPPORTED naming the line endings, and nothing
        changes (never a LF mixed into a CR-only file)."""
        text = MACHINE.replace(b"\n", b"\r")
        repo, d = self.start(text)
        before = self.snap(repo)
        r = d.create("cr", "vm")
        err = self.assertErr(r, 1011, "CONFIG_UNSUPPORTED")
        self.assertIn("CR-only", err["message"])
        self.assertSame(before, repo)


class NotAFile(Base):
    def test_fifo_for_default_nix(self):
        """A FIFO put where default.nix was: nothing waits on it (the daemon kept serving
        and stopped on SIGTERM); requests that need the file say it is not a regular
        file; the file back, all is well."""
        repo, d = self.start(MACHINE)
        path = os.path.join(repo.path, repo.machine_rel)
        text = repo.read(repo.machine_rel)
        os.unlink(path)
        os.mkfifo(path)
        time.sleep(0.5)  # the directory watch's recheck
        self.alive(d)
        for r in (d.call("workspace.list"), d.create("fifo", "vm")):
            self.assertIn("error", r)
            self.assertIn("not a regular file", r["error"]["message"])
        self.alive(d)
        os.unlink(path)
        repo.write(repo.machine_rel, text)
        git(repo.path, "add", repo.machine_rel)
        self.assertIn("result", d.create("back", "vm"))
        d.stop()


class HandWrittenEntries(Base):
    def test_path_like_entry_name_not_followed(self):
        """A hand-written entry named `"../escape"`: listed with a NAME_INVALID problem, and
        its name is never used as a path: a key at SANDBOX_ROOT/../escape/ssh-host-keys is
        neither watched nor registered; workspace.hostkey refuses the name."""
        if not have("ssh-keygen"):
            self.skipTest("ssh-keygen is not installed")
        text = HK_MACHINE.replace(b"  };\n}\n", b'    workspaces."../escape" = {\n'
                                  b'      type = "vm";\n      config = ./workspaces/e.nix;\n'
                                  b'      ip = "192.168.83.11";\n    };\n  };\n}\n')
        repo = self.make_repo(text)
        self.assertIn(nix_parse_ok(os.path.join(repo.path, repo.machine_rel)), (True, None))
        os.makedirs(repo.sandbox)
        kd = os.path.join(repo.tmp, "escape", "ssh-host-keys")
        os.makedirs(kd)
        repo, d = self.start(repo)
        before = self.snap(repo)
        _, canon = keygen(kd, "ssh_host_ed25519_key")
        time.sleep(0.8)
        ws = {w["name"]: w for w in self.assertOk(d.call("workspace.list"))["workspaces"]}
        self.assertIn("../escape", ws)
        self.assertIn("NAME_INVALID", [p["kind"] for p in ws["../escape"]["problems"]])
        r = d.call("workspace.hostkey", {"name": "../escape"})
        self.assertIn("error", r, "a key outside the sandbox root was registered")
        self.assertSame(before, repo)
        self.assertNotIn(canon.encode(), repo.read(repo.machine_rel))

    def test_interpolated_and_odd_entry_names(self):
        """Hand-written entries with interpolated, quoted or keyword names: the daemon lists
        without crashing, and a create next to them keeps the file parseable."""
        text = MACHINE.replace(b"  networking.sandbox",
                               b'  sandboxed-workspace.workspaces.${"inter"} = { type = "vm"; '
                               b'config = ./workspaces/i.nix; ip = "192.168.83.12"; };\n'
                               b'  sandboxed-workspace.workspaces."a\\"b" = { type = "vm"; '
                               b'config = ./workspaces/q.nix; ip = "192.168.83.13"; };\n'
                               b'  sandboxed-workspace.workspaces."" = { type = "vm"; '
                               b'config = ./workspaces/q.nix; ip = "192.168.83.14"; };\n'
                               b'  networking.sandbox')
        repo = self.make_repo(text)
        self.assertIn(nix_parse_ok(os.path.join(repo.path, repo.machine_rel)), (True, None))
        repo, d = self.start(repo)
        self.assertIn("result", d.call("workspace.list"))
        r = d.create("next", "vm")
        if "result" in r:
            self.assertNotIn(r["result"]["workspace"]["ip"],
                             ("192.168.83.12", "192.168.83.13", "192.168.83.14"))
            self.assertParses(repo)
        self.alive(d)


class Races(Base):
    def test_hand_edit_during_failing_build_survives(self):
        """A hand edit of default.nix while a create's build runs: when the build fails,
        the rollback must not destroy the hand edit."""
        repo, d = self.start(MACHINE, verify="build", build_command="sleep 1; exit 1")
        result = []
        t = threading.Thread(target=lambda: result.append(d.create("race", "vm")))
        t.start()
        time.sleep(0.4)
        text = repo.read(repo.machine_rel)
        self.assertIn(b"race", text, "the create should have written by now")
        edited = text.replace(b"  networking.sandbox", b"  # my hand edit\n  networking.sandbox")
        repo.write(repo.machine_rel, edited)
        t.join(20)
        self.assertIn("error", result[0])
        self.assertIn(b"# my hand edit", repo.read(repo.machine_rel),
                      "the rollback destroyed a hand edit")
        self.assertParses(repo)
        self.alive(d)

    def test_staging_during_failing_build_survives(self):
        """`git add` of another file while a create's build runs: when the build fails, the
        undo takes back only the daemon's two index entries, never the user's staging; with
        nobody else in between, the index comes back byte for byte (other tests)."""
        repo, d = self.start(MACHINE, verify="build", build_command="sleep 1; exit 1")
        index = os.path.join(repo.path, ".git", "index")
        before = git(repo.path, "ls-files", "-s", repo.machine_rel)
        repo.write("notes.txt", "the user's own file\n")
        result = []
        t = threading.Thread(target=lambda: result.append(d.create("undo", "vm")))
        t.start()
        end = time.time() + 5
        while time.time() < end and b"workspaces/undo.nix" not in open(index, "rb").read():
            time.sleep(0.02)
        git(repo.path, "add", "notes.txt")
        t.join(20)
        self.assertEqual(result[0]["error"]["data"]["kind"], "VERIFY_FAILED")
        self.assertEqual(git(repo.path, "ls-files", "-s", "notes.txt").split()[-1], "notes.txt",
                         "the user's staging was thrown away")
        self.assertEqual(git(repo.path, "ls-files", "-s", repo.machine_rel), before)
        self.assertEqual(git(repo.path, "ls-files", "machines/%s/workspaces/undo.nix" % repo.host),
                         "")
        self.assertEqual(git(repo.path, "diff", "--cached", "--name-only"), "notes.txt\n")
        self.assertNotIn(b"undo", repo.read(repo.machine_rel))
        self.assertParses(repo)
        self.alive(d)

    def test_undo_blocked_by_index_lock_is_reported(self):
        """Another git holds index.lock through the undo of a failed create (`git commit`
        with its editor open, say): the reply must not claim a clean undo; it says what
        is still staged and how to take it back."""
        repo, d = self.start(MACHINE, verify="build", build_command="sleep 1; exit 1")
        lock = os.path.join(repo.path, ".git", "index.lock")

        def hold():
            time.sleep(0.5)
            open(lock, "wb").close()
            time.sleep(4)
            os.unlink(lock)
        t = threading.Thread(target=hold)
        t.start()
        r = d.create("held", "vm")
        t.join()
        self.assertEqual(r["error"]["data"]["kind"], "VERIFY_FAILED")
        self.assertIn("undo was incomplete", r["error"]["message"])
        self.assertIn("git restore --staged", r["error"]["data"]["undoIncomplete"])
        self.assertIn("workspaces/held.nix", git(repo.path, "diff", "--cached", "--name-only"),
                      "the reply speaks of the entry still staged")
        self.alive(d)

    def test_sigterm_during_slow_build(self):
        """SIGTERM while a create waits for a slow build: the daemon exits promptly, removes
        its socket, and leaves the repository consistent (entry and file both there and
        staged, or neither) and parseable."""
        repo, d = self.start(MACHINE, verify="build", build_command="sleep 3; exit 0")
        result = []

        def go():
            try:
                result.append(d.create("term", "vm"))
            except (EOFError, OSError) as e:
                result.append(e)

        t = threading.Thread(target=go)
        t.start()
        time.sleep(0.5)
        t0 = time.time()
        self.daemons.remove(d)
        d.stop(expect_code=None)
        self.assertLess(time.time() - t0, 10)
        t.join(10)
        self.assertFalse(os.path.exists(d.socket), "socket left behind")
        self.assertParses(repo)
        text = repo.read(repo.machine_rel)
        has_entry = b"workspaces.term" in text
        has_file = repo.exists("machines/atlas/workspaces/term.nix")
        self.assertEqual(has_entry, has_file, "entry and workspace file disagree")
        staged = git(repo.path, "diff", "--cached", "--name-only").split()
        if has_entry:
            self.assertIn("machines/atlas/workspaces/term.nix", staged)
        else:
            self.assertEqual(staged, [])
            self.assertEqual(git(repo.path, "status", "--porcelain"), "")
        # no build child left behind
        p = subprocess.run(["pgrep", "-f", "sleep 3; exit 0"], capture_output=True)
        self.assertEqual(p.stdout.strip(), b"", "the build command outlived the daemon")


class Flood(Base):
    def test_500_connections(self):
        """500 connections open at once, each with a request: every one answered, with the
        result or (beyond the daemon's connection limit) a clear BUSY error."""
        repo, d = self.start(MACHINE)
        conns = []
        try:
            for i in range(500):
                c = object.__new__(Conn)
                c.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                c.s.connect(d.socket)  # blocking, as a plain client does: waits on the backlog
                c.s.settimeout(20)
                c.buf = b""
                conns.append(c)
            for i, c in enumerate(conns):
                try:
                    c.send({"jsonrpc": "2.0", "id": i, "method": "workspace.list"})
                except (BrokenPipeError, ConnectionResetError):
                    pass  # refused over the limit: the BUSY line is still there to read
            served = 0
            for i, c in enumerate(conns):
                try:
                    r = c.recv()
                except (ConnectionResetError, EOFError) as e:
                    self.fail("connection %d got no reply at all (%r): a refused client must "
                              "be able to read its BUSY error" % (i, e))
                if "error" in r and r["error"]["code"] == 1051:
                    # over the daemon's connection limit: told so, clearly, with BUSY
                    self.assertIn("connections", r["error"]["message"])
                    continue
                self.assertEqual(r["id"], i)
                self.assertIn("result", r)
                served += 1
            self.assertGreaterEqual(served, 100)
        finally:
            for c in conns:
                c.close()
        self.alive(d)

    def test_client_never_reads(self):
        """A client that pipelines requests and never reads its replies: the daemon stays
        responsive for others and does not grow without bound."""
        repo, d = self.start(MACHINE)
        hog = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        hog.connect(d.socket)
        hog.setblocking(False)
        req = b'{"jsonrpc":"2.0","id":1,"method":"workspace.list"}\n' * 200
        sent = 0
        t0 = time.time()
        while time.time() - t0 < 4:
            try:
                sent += hog.send(req)
            except BlockingIOError:
                time.sleep(0.01)
            except (BrokenPipeError, ConnectionResetError):
                break
        try:
            t1 = time.time()
            self.alive(d, within=3)
            self.assertLess(time.time() - t1, 3)
            with open("/proc/%d/status" % d.proc.pid) as f:
                rss = [l for l in f if l.startswith("VmRSS")][0].split()[1]
            self.assertLess(int(rss), 512 * 1024, "RSS %s kB after a non-reading client" % rss)
        finally:
            hog.close()
        self.alive(d)


class HostKeyFiles(Base):
    def setUp(self):
        super().setUp()
        if not have("ssh-keygen"):
            self.skipTest("ssh-keygen is not installed")
        self.repo = self.make_repo(HK_MACHINE)
        os.makedirs(self.repo.sandbox)
        self.repo, self.d = self.start(self.repo)
        self.keyd = os.path.join(self.repo.sandbox, "alpha", "ssh-host-keys")
        self.key = os.path.join(self.keyd, "ssh_host_ed25519_key.pub")

    def hostkey(self, timeout=5):
        c = Conn(self.d.socket, timeout=timeout)
        try:
            return c.call("workspace.hostkey", {"name": "alpha"})
        finally:
            c.close()

    def test_fifo(self):
        """The key file a FIFO nobody writes: never blocks the daemon; HOSTKEY_INVALID."""
        os.makedirs(self.keyd)
        time.sleep(0.2)
        os.mkfifo(self.key)
        time.sleep(0.3)
        self.alive(self.d)
        before = self.snap(self.repo)
        t0 = time.time()
        r = self.hostkey()
        self.assertLess(time.time() - t0, 3)
        self.assertErr(r, 1031, "HOSTKEY_INVALID")
        self.assertSame(before, self.repo)
        self.alive(self.d)

    def test_directory(self):
        """The key file a directory: HOSTKEY_INVALID, nothing written."""
        os.makedirs(self.key)
        before = self.snap(self.repo)
        self.assertErr(self.hostkey(), 1031, "HOSTKEY_INVALID")
        self.assertSame(before, self.repo)
        self.alive(self.d)

    def test_huge(self):
        """A 64 MB key file (a valid key and then padding): refused fast, nothing written."""
        _, canon = keygen(self.outside)
        os.makedirs(self.keyd)
        with open(self.key + ".tmp", "wb") as f:
            f.write(canon.encode() + b" " + b"A" * (64 * 1024 * 1024) + b"\n")
        os.rename(self.key + ".tmp", self.key)
        time.sleep(0.5)
        before = self.snap(self.repo)
        t0 = time.time()
        self.assertErr(self.hostkey(), 1031, "HOSTKEY_INVALID")
        self.assertLess(time.time() - t0, 3)
        self.assertSame(before, self.repo)
        self.alive(self.d)

    def test_trailing_garbage(self):
        """A valid key followed by another line: not exactly one key, refused."""
        text, canon = keygen(self.outside)
        _, canon2 = keygen(self.outside, "key2")
        os.makedirs(self.keyd)
        for n, data in enumerate((text + "garbage here\n", text + canon2 + "\n",
                                  canon + "\x00junk\n", canon + "AAAA root@ws\n")):
            with open(self.key + ".tmp", "wb") as f:
                f.write(data.encode())
            os.rename(self.key + ".tmp", self.key)
            time.sleep(0.3)
            before = self.snap(self.repo)
            r = self.hostkey()
            self.assertErr(r, 1031, "HOSTKEY_INVALID")
            self.assertSame(before, self.repo)
        self.assertNotIn(b"hostKey", self.repo.read(self.repo.machine_rel))

    def test_keydir_symlink_out_of_sandbox(self):
        """ssh-host-keys a symbolic link to a directory outside the sandbox root: the key
        there is never read or written to the configuration."""
        _, canon = keygen(self.outside, "ssh_host_ed25519_key")
        os.makedirs(os.path.join(self.repo.sandbox, "alpha"))
        os.symlink(self.outside, self.keyd)
        time.sleep(0.5)
        before = self.snap(self.repo)
        r = self.hostkey()
        self.assertIn("error", r, "a key was read through a link out of the sandbox root")
        self.assertSame(before, self.repo)
        self.assertNotIn(canon.encode(), self.repo.read(self.repo.machine_rel))

    def test_sandbox_dir_symlink_out_of_sandbox(self):
        """SANDBOX_ROOT/NAME a symbolic link out of the sandbox root: never followed."""
        os.makedirs(os.path.join(self.outside, "ssh-host-keys"))
        _, canon = keygen(os.path.join(self.outside, "ssh-host-keys"), "ssh_host_ed25519_key")
        os.symlink(self.outside, os.path.join(self.repo.sandbox, "alpha"))
        time.sleep(0.5)
        before = self.snap(self.repo)
        r = self.hostkey()
        self.assertIn("error", r, "a key was read through a link out of the sandbox root")
        self.assertSame(before, self.repo)
        self.assertNotIn(canon.encode(), self.repo.read(self.repo.machine_rel))

    def test_key_replaced_by_symlink(self):
        """A valid key file swapped for a symbolic link right after it is written: the
        target of the link is never registered."""
        _, canon_out = keygen(self.outside, "evil")
        text, canon = keygen(self.outside, "good")
        os.makedirs(self.keyd)
        sub = self.d.conn()
        self.assertOk(sub.call("events.subscribe"))
        with open(self.key, "w") as f:
            f.write(text)
        os.unlink(self.key)
        os.symlink(os.path.join(self.outside, "evil.pub"), self.key)
        time.sleep(1.0)
        self.assertNotIn(canon_out.encode(), self.repo.read(self.repo.machine_rel))
        self.alive(self.d)

    def test_dotdot_and_space_names(self):
        """workspace.hostkey and show with `..`, `../x`, `a b`: NAME_INVALID or NOT_FOUND,
        and nothing outside the sandbox root is read."""
        os.makedirs(os.path.join(self.repo.sandbox, "a b", "ssh-host-keys"))
        _, canon = keygen(os.path.join(self.repo.sandbox, "a b", "ssh-host-keys"),
                          "ssh_host_ed25519_key")
        os.makedirs(os.path.join(self.repo.tmp, "ssh-host-keys"))
        keygen(os.path.join(self.repo.tmp, "ssh-host-keys"), "ssh_host_ed25519_key")
        time.sleep(0.3)
        before = self.snap(self.repo)
        for name in ("..", "../x", "a b", ".", "", "/"):
            for method in ("workspace.hostkey", "workspace.show"):
                r = self.d.call(method, {"name": name})
                self.assertIn("error", r, (method, name))
                self.assertIn(r["error"]["code"], (1001, 1004, -32602), (method, name, r))
        self.assertSame(before, self.repo)
        self.alive(self.d)


class DiskFull(DaemonTest):
    """A create on a disk that is full, or all but: it may succeed or fail, but a failure
    leaves the work tree, the index and the state as they were. The file's replacement
    was prefilled before the disk filled up, so the new default.nix is swapped in without
    needing space, and the index write then fails: putting the old file back must not need
    space either (it once did, and left default.nix naming a workspace file the undo had
    removed)."""

    def test_create_on_a_full_disk(self):
        if os.geteuid() != 0:
            self.skipTest("mounting a small file system needs root")
        mnt = tempfile.mkdtemp(prefix="ws-e2e-full-")
        if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", mnt],
                          capture_output=True).returncode != 0:
            os.rmdir(mnt)
            self.skipTest("cannot mount a tmpfs here")
        self.addCleanup(os.rmdir, mnt)
        self.addCleanup(subprocess.run, ["umount", "-l", mnt])
        # comments first, so that the new entry goes into the second half of the file
        # (where a prefilled temporary is made and used)
        text = "".join("# line %07d %s\n" % (i, "q" * 100) for i in range(5000)) + \
            fixture("02-nested-block.nix").decode()
        saved, tempfile.tempdir = tempfile.tempdir, mnt
        try:
            repo = self.make_repo(text)
        finally:
            tempfile.tempdir = saved
        repo, d = self.start(repo, verify="none")
        self.assertIn("result", d.create("warm", "vm"))
        filler = os.path.join(mnt, "filler")
        outcomes = []
        for i, free in enumerate((0, 4096, 12288, 65536, 200000, 600000)):
            time.sleep(0.3)  # the prefilled temporary is ready
            before = repo.snapshot()
            st = os.statvfs(mnt)
            with open(filler, "wb") as f:
                f.write(b"\0" * max(0, st.f_bavail * st.f_frsize - free))
            name = "e%d" % i
            res = d.create(name, "vm")
            os.unlink(filler)
            text_now = repo.read(repo.machine_rel).decode()
            if "error" in res:
                outcomes.append("failed")
                self.assertNotIn("undoIncomplete", res["error"].get("data", {}), res)
                self.assertUnchanged(before, repo)
            else:
                outcomes.append("created")
                self.assertIn("workspaces.%s" % name, text_now)
                self.assertTrue(repo.exists("machines/atlas/workspaces/%s.nix" % name))
                self.assertIn("workspaces.%s" % name,
                              git(repo.path, "show", ":" + repo.machine_rel))
        self.assertIn("failed", outcomes)  # the disk really was full


if __name__ == "__main__":
    main()
