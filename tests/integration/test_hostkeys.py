# SPDX-License-Identifier: MIT
"""Every row of cases/hostkeys.md end to end: the real daemon watching a real sandbox
root, keys from ssh-keygen, hostKey written and staged in the real repository."""
import ctypes
import os
import shutil
import struct
import subprocess
import tempfile
import threading
import time

from wslib import DaemonTest, Daemon, fixture, git, have, nix_parse_ok, main

MACHINE = b"""{ config, lib, pkgs, ... }:
{
  sandboxed-workspace = {
    enable = true;
    workspaces.alpha = {
      type = "container";
      config = ./workspaces/alpha.nix;
      ip = "192.168.83.50";
    };
    workspaces.beta = {
      type = "vm";
      config = ./workspaces/beta.nix;
      ip = "192.168.83.10";
    };
  };
}
"""

IN_OPEN = 0x20
IN_MOVED_TO = 0x80
IN_CLOSE_WRITE = 0x08


class Inotify:
    """Counts events with ctypes (the test itself never opens the watched files)."""

    def __init__(self):
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.fd = self.libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        assert self.fd >= 0
        self.wds = {}

    def watch(self, path, mask):
        wd = self.libc.inotify_add_watch(self.fd, path.encode(), mask)
        assert wd >= 0, "inotify_add_watch %s failed" % path
        self.wds[wd] = path

    def events(self):
        out = []
        while True:
            try:
                data = os.read(self.fd, 65536)
            except BlockingIOError:
                return out
            i = 0
            while i < len(data):
                wd, mask, cookie, n = struct.unpack_from("iIII", data, i)
                name = data[i + 16:i + 16 + n].rstrip(b"\0").decode()
                out.append((self.wds.get(wd), mask, name))
                i += 16 + n

    def close(self):
        os.close(self.fd)


def keygen(dirpath, name="key"):
    p = os.path.join(dirpath, name)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "root@ws", "-f", p],
                   check=True)
    with open(p + ".pub") as f:
        text = f.read()
    fp = subprocess.run(["ssh-keygen", "-l", "-E", "sha256", "-f", p + ".pub"],
                        capture_output=True, check=True).stdout.decode().split()[1]
    typ, b64 = text.split()[:2]
    return text, typ + " " + b64, fp


class HostKeys(DaemonTest):
    def setUp(self):
        super().setUp()
        if not have("ssh-keygen"):
            self.skipTest("ssh-keygen is not installed")
        self.keys = tempfile.mkdtemp(prefix="ws-keys-")
        self.repo = self.make_repo(MACHINE)
        os.makedirs(self.repo.sandbox)

    def tearDown(self):
        super().tearDown()
        shutil.rmtree(self.keys, ignore_errors=True)

    def start_daemon(self):
        self.repo, self.d = self.start(self.repo)
        self.sub = self.d.conn()
        self.assertIn("result", self.sub.call("events.subscribe"))
        return self.d

    def keydir(self, name):
        p = os.path.join(self.repo.sandbox, name, "ssh-host-keys")
        os.makedirs(p, exist_ok=True)
        return p

    def keyfile(self, name):
        return os.path.join(self.repo.sandbox, name, "ssh-host-keys", "ssh_host_ed25519_key.pub")

    def write_key(self, name, data):
        self.keydir(name)
        with open(self.keyfile(name), "wb") as f:
            f.write(data if isinstance(data, bytes) else data.encode())

    def next_event(self, timeout=5):
        return self.sub.recv(timeout=timeout)["params"]

    def no_event(self, wait=1.0):
        try:
            ev = self.sub.recv(timeout=wait)
        except OSError:
            return
        self.fail("unexpected event %r" % ev)

    def staged_hostkey(self, name):
        text = git(self.repo.path, "show", ":" + self.repo.machine_rel)
        return text

    def assert_registered(self, name, canonical, fp=None):
        ev = self.next_event()
        self.assertEqual(ev["type"], "hostkey.registered", ev)
        self.assertEqual(ev["name"], name)
        self.assertEqual(ev["hostKey"], canonical)
        if fp:
            self.assertEqual(ev["fingerprint"], fp)
        work = self.repo.read(self.repo.machine_rel).decode()
        self.assertIn('hostKey = "%s";' % canonical, work)
        self.assertIn('hostKey = "%s";' % canonical, self.staged_hostkey(name))
        self.assertIn(nix_parse_ok(os.path.join(self.repo.path, self.repo.machine_rel)),
                      (True, None))
        shown = self.d.call("workspace.show", {"name": name})["result"]
        self.assertEqual(shown["hostKey"], canonical)

    def test_registered_canonical(self):
        self.start_daemon()
        text, canonical, fp = keygen(self.keys)
        self.assertTrue(text.endswith(" root@ws\n"))
        self.write_key("alpha", text)
        self.assert_registered("alpha", canonical, fp)
        self.assertNotIn("root@ws", self.repo.read(self.repo.machine_rel).decode())
        names = git(self.repo.path, "diff", "--cached", "--name-only").split()
        self.assertEqual(names, [self.repo.machine_rel])

    def test_no_newline_and_crlf(self):
        self.start_daemon()
        text, canonical, fp = keygen(self.keys, "a")
        self.write_key("alpha", text.rstrip("\n"))
        self.assert_registered("alpha", canonical)
        text2, canonical2, _ = keygen(self.keys, "b")
        self.write_key("beta", text2.rstrip("\n") + "\r\n")
        self.assert_registered("beta", canonical2)

    def test_created_empty_then_filled(self):
        self.start_daemon()
        text, canonical, _ = keygen(self.keys)
        self.write_key("alpha", b"")
        time.sleep(0.3)
        self.assertNotIn(b'hostKey = "";', self.repo.read(self.repo.machine_rel))
        self.write_key("alpha", text)
        self.assert_registered("alpha", canonical)
        self.assertNotIn(b'hostKey = "";', self.repo.read(self.repo.machine_rel))

    def test_temp_then_rename(self):
        self.start_daemon()
        text, canonical, _ = keygen(self.keys)
        d = self.keydir("alpha")
        tmp = os.path.join(d, ".tmp-key")
        with open(tmp, "w") as f:
            f.write(text)
        os.rename(tmp, self.keyfile("alpha"))
        self.assert_registered("alpha", canonical)

    def test_sandbox_dir_appears_later(self):
        shutil.rmtree(self.repo.sandbox)
        self.start_daemon()
        text, canonical, _ = keygen(self.keys)
        kf = os.path.join(self.keys, "key.pub")
        subprocess.run("mkdir -p %s && cp %s %s" % (self.keydir.__func__ and
                                                    os.path.dirname(self.keyfile("beta")),
                                                    kf, self.keyfile("beta")),
                       shell=True, check=True)
        self.assert_registered("beta", canonical)

    def test_symlink_refused(self):
        self.start_daemon()
        text, canonical, _ = keygen(self.keys)
        self.keydir("alpha")
        os.symlink(os.path.join(self.keys, "key.pub"), self.keyfile("alpha"))
        before = self.repo.snapshot()
        ev = self.next_event()
        self.assertEqual(ev["type"], "hostkey.invalid")
        self.assertEqual(ev["name"], "alpha")
        self.assertIn("link", ev["message"])
        self.assertUnchanged(before, self.repo)

    def invalid(self, data):
        self.start_daemon()
        before = self.repo.snapshot()
        self.write_key("alpha", data)
        ev = self.next_event()
        self.assertEqual(ev["type"], "hostkey.invalid")
        self.assertEqual(ev["name"], "alpha")
        self.assertUnchanged(before, self.repo)

    def test_injection_refused(self):
        self.invalid('ssh-ed25519 AAAA"; users.users.root.password = "x"; #\n')

    def test_not_a_key(self):
        self.invalid("not a key\n")

    def test_same_key_again_does_nothing(self):
        self.start_daemon()
        text, canonical, _ = keygen(self.keys)
        self.write_key("alpha", text)
        self.assert_registered("alpha", canonical)
        before = self.repo.snapshot()
        self.write_key("alpha", text)
        self.no_event(1.0)
        self.assertUnchanged(before, self.repo)
        r = self.d.call("workspace.hostkey", {"name": "alpha"})["result"]
        self.assertFalse(r["changed"])

    def test_mismatch_then_replace(self):
        self.start_daemon()
        text, canonical, fp = keygen(self.keys, "a")
        self.write_key("alpha", text)
        self.assert_registered("alpha", canonical)
        text2, canonical2, fp2 = keygen(self.keys, "b")
        before = self.repo.snapshot()
        self.write_key("alpha", text2)
        ev = self.next_event()
        self.assertEqual(ev["type"], "hostkey.mismatch")
        self.assertEqual(ev["fingerprint"], fp2)
        self.assertEqual(ev["registeredFingerprint"], fp)
        after = self.repo.snapshot()
        for k in before:
            if "ssh-host-keys" not in k:
                self.assertEqual(before[k], after[k], k)
        shown = self.d.call("workspace.show", {"name": "alpha"})["result"]
        self.assertIn("HOSTKEY_MISMATCH", [p["kind"] for p in shown["problems"]])
        err = self.d.call("workspace.hostkey", {"name": "alpha"})["error"]
        self.assertEqual(err["code"], 1032)
        p = self.d.wsctl("hostkey", "alpha", "--replace")
        self.assertEqual(p.returncode, 0, p.stderr.decode())
        ev = self.next_event()
        self.assertEqual(ev["type"], "hostkey.registered")
        self.assertEqual(ev["previousFingerprint"], fp)
        self.assertEqual(ev["fingerprint"], fp2)
        work = self.repo.read(self.repo.machine_rel).decode()
        self.assertIn('hostKey = "%s";' % canonical2, work)
        self.assertNotIn(canonical, work)
        self.assertIn(canonical2, self.staged_hostkey("alpha"))
        shown = self.d.call("workspace.show", {"name": "alpha"})["result"]
        self.assertNotIn("HOSTKEY_MISMATCH", [p["kind"] for p in shown["problems"]])

    def test_undeclared_directory_ignored(self):
        self.start_daemon()
        text, canonical, _ = keygen(self.keys)
        before = self.repo.snapshot()
        self.write_key("stranger", text)
        self.no_event(1.0)
        self.assertUnchanged(before, self.repo)

    def test_private_key_never_opened(self):
        self.start_daemon()
        text, canonical, _ = keygen(self.keys)
        d = self.keydir("alpha")
        priv = os.path.join(d, "ssh_host_ed25519_key")
        shutil.copy(os.path.join(self.keys, "key"), priv)
        ino = Inotify()
        ino.watch(priv, IN_OPEN)
        self.write_key("alpha", text)
        self.assert_registered("alpha", canonical)
        time.sleep(0.2)
        self.assertEqual(ino.events(), [], "the private key was opened")
        ino.close()

    def test_ten_keys_one_write(self):
        names = ["w%d" % i for i in range(10)]
        body = b"".join(b'    workspaces.%s = { type = "vm"; config = ./workspaces/%s.nix; ip = "192.168.83.%d"; };\n'
                        % (n.encode(), n.encode(), 20 + i) for i, n in enumerate(names))
        text = MACHINE.replace(b"  };\n}\n", body + b"  };\n}\n")
        self.repo.write(self.repo.machine_rel, text)
        git(self.repo.path, "commit", "-qam", "ten")
        self.start_daemon()
        keys = [keygen(self.keys, n) for n in names]
        ino = Inotify()
        ino.watch(self.repo.machine_dir, IN_MOVED_TO)
        ino.watch(os.path.join(self.repo.path, ".git"), IN_MOVED_TO)
        for n, k in zip(names, keys):
            self.keydir(n)
        # a deploy's keys close together: all ten written first, then closed at once
        # (one close_range() call where the descriptors are consecutive)
        fds = []
        for n, k in zip(names, keys):
            fd = os.open(self.keyfile(n), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.write(fd, k[0].encode())
            fds.append(fd)
        if fds == list(range(fds[0], fds[0] + len(fds))):
            os.closerange(fds[0], fds[-1] + 1)
        else:
            for fd in fds:
                os.close(fd)
        got = set()
        while len(got) < 10:
            ev = self.next_event()
            self.assertEqual(ev["type"], "hostkey.registered")
            got.add(ev["name"])
        time.sleep(0.2)
        evs = ino.events()
        main_writes = [e for e in evs if e[2] == "default.nix"]
        index_writes = [e for e in evs if e[2] == "index"]
        self.assertEqual(len(main_writes), 1, evs)
        self.assertEqual(len(index_writes), 1, evs)
        work = self.repo.read(self.repo.machine_rel).decode()
        for k in keys:
            self.assertIn(k[1], work)
        ino.close()

    def test_trust_survives_restart(self):
        d = self.start_daemon()
        text, canonical, fp = keygen(self.keys, "a")
        self.write_key("alpha", text)
        self.assert_registered("alpha", canonical)
        self.stop(d)
        git(self.repo.path, "commit", "-qm", "register key")
        # the user drops hostKey by hand and commits; the daemon still remembers the key
        work = self.repo.read(self.repo.machine_rel).decode()
        lines = [l for l in work.splitlines(True) if "hostKey" not in l]
        self.repo.write(self.repo.machine_rel, "".join(lines))
        git(self.repo.path, "commit", "-qam", "drop key")
        self.start_daemon()
        # the old key file is still there: removed by hand means it is not written back
        self.no_event(0.5)
        self.assertNotIn("hostKey", self.repo.read(self.repo.machine_rel).decode())
        text2, canonical2, fp2 = keygen(self.keys, "b")
        self.write_key("alpha", text2)
        ev = self.next_event()
        self.assertEqual(ev["type"], "hostkey.mismatch")
        self.assertEqual(ev["registeredFingerprint"], fp)
        self.assertNotIn("hostKey", self.repo.read(self.repo.machine_rel).decode())
        # asked for explicitly, the trusted key file can be registered again
        self.write_key("alpha", text)
        self.no_event(0.5)
        r = self.d.call("workspace.hostkey", {"name": "alpha"})["result"]
        self.assertTrue(r["changed"])
        self.assertIn(canonical, self.repo.read(self.repo.machine_rel).decode())

    def test_key_at_startup_and_new_workspace_watched(self):
        text, canonical, _ = keygen(self.keys, "a")
        self.write_key("alpha", text)
        self.start_daemon()
        # the start-up scan may finish before the test's subscription: look at the file
        end = time.time() + 5
        while time.time() < end and canonical.encode() not in self.repo.read(self.repo.machine_rel):
            time.sleep(0.05)
        self.assertIn('hostKey = "%s";' % canonical, self.staged_hostkey("alpha"))
        self.assertIn(canonical, self.repo.read(self.repo.machine_rel).decode())
        # the key is written at once after the reply: before the new name's watch starts
        # (that waits a few milliseconds after a write), so the watch must find it there
        text2, canonical2, _ = keygen(self.keys, "c")
        r = self.d.create("gamma", "container")
        self.write_key("gamma", text2)
        self.assertIn("result", r)
        ev = self.next_event()
        if ev["type"] == "hostkey.registered" and ev["name"] == "alpha":
            ev = self.next_event()  # the start-up scan's event, if it came after subscribing
        self.assertEqual(ev["type"], "workspace.created")
        self.assert_registered("gamma", canonical2)

    def test_hand_added_workspace_watched(self):
        self.start_daemon()
        work = self.repo.read(self.repo.machine_rel)
        work = work.replace(b"  };\n}\n", b'    workspaces.hand = { type = "vm"; config = ./workspaces/hand.nix; ip = "192.168.83.30"; };\n  };\n}\n')
        self.repo.write(self.repo.machine_rel, work)
        git(self.repo.path, "add", self.repo.machine_rel)
        ev = self.next_event()
        self.assertEqual(ev["type"], "config.changed")
        text, canonical, _ = keygen(self.keys)
        self.write_key("hand", text)
        self.assert_registered("hand", canonical)

    def test_creates_in_a_row_and_hand_edit_watched(self):
        # creates add their names to the watched set one by one (no sort of every name);
        # a hand edit in between makes the set anew: every declared name stays watched
        self.start_daemon()
        keys = iter(keygen(self.keys, "k%d" % i) for i in range(5))

        def key_registers(name):
            text, canonical, _ = next(keys)
            self.write_key(name, text)
            self.assert_registered(name, canonical)

        for n in ("b1", "b2", "b3"):
            self.assertIn("result", self.d.create(n, "vm"))
        for n in ("b1", "b2", "b3"):
            ev = self.next_event()
            self.assertEqual((ev["type"], ev["name"]), ("workspace.created", n))
        key_registers("b3")
        work = self.repo.read(self.repo.machine_rel)
        work = work.replace(b"  };\n}\n", b'    workspaces.hand = { type = "vm"; config = ./workspaces/hand.nix; ip = "192.168.83.30"; };\n  };\n}\n')
        self.repo.write(self.repo.machine_rel, work)
        git(self.repo.path, "add", self.repo.machine_rel)
        self.assertEqual(self.next_event()["type"], "config.changed")
        self.assertIn("result", self.d.create("b4", "container"))
        self.assertEqual(self.next_event()["type"], "workspace.created")
        key_registers("b4")
        key_registers("hand")
        key_registers("b1")

    def test_wsctl_wait_hostkey(self):
        self.start_daemon()
        text, canonical, fp = keygen(self.keys)

        def later():
            time.sleep(1.0)
            self.write_key("delta", text)

        t = threading.Thread(target=later)
        t.start()
        p = self.d.wsctl("create", "delta", "--type", "vm", "--wait-hostkey", "--timeout", "20")
        t.join()
        self.assertEqual(p.returncode, 0, p.stderr.decode())
        self.assertIn(fp, p.stdout.decode())
        self.assertIn(canonical, self.repo.read(self.repo.machine_rel).decode())


if __name__ == "__main__":
    main()
