# SPDX-License-Identifier: MIT
"""The daemon as a process: start-up refusals, the socket, signals, peer credentials,
addresses, dry runs, verification, and byte-identical state after every failure."""
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import threading
import time

from wslib import (DaemonTest, Daemon, Conn, Repo, WORKSPACED, fixture, git, have,
                   nix_parse_ok, main)


class Startup(DaemonTest):
    def refused(self, repo, args=(), env=None):
        d = Daemon(repo, wait=False, extra_args=args, env=env)
        self.daemons.append(d)
        d.proc.wait(timeout=10)
        self.assertNotEqual(d.proc.returncode, 0)
        return d.output()

    def test_socket_path_too_long(self):
        repo = self.make_repo(fixture("01-no-block.nix"))
        long = os.path.join(repo.run_dir, "s" * 120 + ".sock")
        out = self.refused(repo, ["--socket", long])
        self.assertIn("107", out)
        self.assertIn("s" * 40, out)

    def test_no_runtime_dir(self):
        repo = self.make_repo(fixture("01-no-block.nix"))
        env = dict(os.environ)
        env.pop("XDG_RUNTIME_DIR", None)
        p = subprocess.run([WORKSPACED, "--repo", repo.path, "--machine", "atlas",
                            "--state-dir", repo.state_dir], capture_output=True, env=env,
                           timeout=10)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("XDG_RUNTIME_DIR", p.stderr.decode())

    def test_unparsable_machine_file_still_serves(self):
        repo, d = self.start(fixture("14-unparsable.nix"))
        info = self.assertOk(d.call("daemon.info"))
        self.assertIsNone(info["workspaces"])
        err = self.assertErr(d.call("workspace.show", {"name": "half"}), 1010)
        self.assertEqual(err["data"]["line"], 7)
        # the owner finishes the edit: the daemon picks it up
        text = repo.read(repo.machine_rel).replace(b'"container"\n', b'"container";\n')
        repo.write(repo.machine_rel, text)
        res = self.assertOk(d.call("workspace.list"))
        self.assertEqual([w["name"] for w in res["workspaces"]], ["half"])

    def test_one_daemon_per_repository(self):
        repo, d = self.start(fixture("01-no-block.nix"))
        before = repo.snapshot()
        other = os.path.join(repo.tmp, "other.sock")
        # same repository, another socket and state directory: refused
        p = subprocess.run([WORKSPACED, "--repo", repo.path, "--machine", "atlas",
                            "--socket", other, "--state-dir", os.path.join(repo.tmp, "st2"),
                            "--sandbox-root", repo.sandbox, "--verify", "none"],
                           capture_output=True, timeout=10)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("another workspaced (pid %d)" % d.proc.pid, p.stderr.decode())
        self.assertFalse(os.path.exists(other))
        # another repository with the same state directory: refused too
        repo2 = self.make_repo(fixture("01-no-block.nix"))
        p = subprocess.run([WORKSPACED, "--repo", repo2.path, "--machine", "atlas",
                            "--socket", other, "--state-dir", repo.state_dir,
                            "--sandbox-root", repo.sandbox, "--verify", "none"],
                           capture_output=True, timeout=10)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("state directory", p.stderr.decode())
        self.assertIn("result", d.call("daemon.info"))
        # once the first is gone, the lock is free again
        self.stop(d)
        repo, d = self.start(repo)
        self.assertIn("result", d.call("daemon.info"))

    def test_help_and_version(self):
        p = subprocess.run([WORKSPACED, "--help"], capture_output=True, timeout=10)
        self.assertEqual(p.returncode, 0)
        out = p.stdout.decode()
        for flag in ("--repo", "--machine", "--sandbox-root", "--socket", "--verify",
                     "--build-command", "--state-dir", "--config", "--check"):
            self.assertIn(flag, out)
        p = subprocess.run([WORKSPACED, "--version"], capture_output=True, timeout=10)
        self.assertEqual(p.returncode, 0)
        self.assertIn("workspaced", p.stdout.decode())
        p = subprocess.run([WORKSPACED, "--no-such-flag"], capture_output=True, timeout=10)
        self.assertEqual(p.returncode, 2)
        self.assertIn("--no-such-flag", p.stderr.decode())


class Socket(DaemonTest):
    def test_mode_and_cleanup(self):
        repo, d = self.start(fixture("01-no-block.nix"))
        st = os.stat(d.socket)
        self.assertTrue(stat.S_ISSOCK(st.st_mode))
        self.assertEqual(stat.S_IMODE(st.st_mode), 0o600)
        self.stop(d)
        self.assertFalse(os.path.exists(d.socket), "SIGTERM must remove the socket file")

    def test_sigint_clean(self):
        repo, d = self.start(fixture("01-no-block.nix"))
        d.proc.send_signal(2)
        d.proc.wait(timeout=10)
        self.assertEqual(d.proc.returncode, 0)
        self.assertFalse(os.path.exists(d.socket))

    def test_peer_credentials(self):
        if os.geteuid() != 0:
            self.skipTest("needs root to act as another user")
        repo, d = self.start(fixture("01-no-block.nix"))
        os.chmod(repo.tmp, 0o755)
        os.chmod(repo.run_dir, 0o755)
        os.chmod(d.socket, 0o777)
        code = ("import os,socket,json\n"
                "os.setgid(65534); os.setuid(65534)\n"
                "s=socket.socket(socket.AF_UNIX); s.connect(%r)\n"
                "try:\n"
                "    s.sendall(b'{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"daemon.info\"}\\n')\n"
                "except OSError:\n"
                "    pass\n"
                "data=b''\n"
                "while True:\n"
                "    try:\n"
                "        c=s.recv(4096)\n"
                "    except ConnectionResetError:\n"
                "        break\n"
                "    if not c: break\n"
                "    data+=c\n"
                "print(data.decode())\n" % d.socket)
        p = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=20)
        self.assertEqual(p.returncode, 0, p.stderr.decode())
        line = p.stdout.decode().strip().splitlines()[0]
        r = json.loads(line)
        self.assertEqual(r["error"]["code"], 1050)
        self.assertIn("result", d.call("daemon.info"), "the owner is still served")


class Create(DaemonTest):
    def test_explicit_ip(self):
        repo, d = self.start(fixture("03-dotted-top.nix"))
        before = repo.snapshot()
        for bad in ("10.0.0.5", "192.168.83.0", "192.168.83.1", "192.168.83.255",
                    "192.168.83.300", "not-an-ip", "192.168.083.5"):
            err = self.assertErr(d.create("x1", "container", ip=bad), 1005, "IP_INVALID")
            self.assertEqual(err["data"]["ip"], bad)  # the detail names the address
        err = self.assertErr(d.create("x1", "container", ip="192.168.83.20"), 1005, "IP_INVALID")
        self.assertIn("container range 192.168.83.50-192.168.83.89", err["message"])
        err = self.assertErr(d.create("x1", "container", ip="192.168.83.1"), 1005, "IP_INVALID")
        self.assertIn("gateway", err["message"])
        err = self.assertErr(d.create("x1", "container", ip="192.168.83.51"), 1006, "IP_TAKEN")
        self.assertIn("api", err["message"])
        self.assertEqual(err["data"]["ip"], "192.168.83.51")
        self.assertUnchanged(before, repo)
        res = self.assertOk(d.create("x1", "container", ip="192.168.83.77"))
        self.assertEqual(res["workspace"]["ip"], "192.168.83.77")

    def test_autostart(self):
        repo, d = self.start(fixture("03-dotted-top.nix"))
        res = self.assertOk(d.create("auto", "container", autoStart=True))
        self.assertTrue(res["workspace"]["autoStart"])
        self.assertIn(b"autoStart = true;", repo.read(repo.machine_rel))
        res = self.assertOk(d.create("manual", "vm"))
        self.assertFalse(res["workspace"]["autoStart"])

    def test_file_exists(self):
        repo = self.make_repo(fixture("01-no-block.nix"),
                              extra_files={"machines/atlas/workspaces/dev.nix": "# mine\n"})
        repo, d = self.start(repo)
        before = repo.snapshot()
        err = self.assertErr(d.create("dev", "container"), 1013, "FILE_EXISTS")
        self.assertIn("workspaces/dev.nix", err["message"])
        self.assertUnchanged(before, repo)

    def test_creates_leave_no_temporaries(self):
        # the temporaries made ahead between writes have no names: after creates (one
        # refused, one a dry run) the directories hold exactly the files declared, each a
        # plain file of its own with the mode a new file gets
        repo = self.make_repo(fixture("01-no-block.nix"),
                              extra_files={"machines/atlas/workspaces/taken.nix": "# mine\n"})
        repo, d = self.start(repo)
        for name, type in (("a1", "vm"), ("a2", "container"), ("a3", "incus")):
            self.assertOk(d.create(name, type))
        self.assertErr(d.create("taken", "vm"), 1013, "FILE_EXISTS")
        self.assertOk(d.create("dry", "vm", dryRun=True))
        self.assertOk(d.create("a4", "vm"))
        mdir = os.path.join(repo.path, "machines", "atlas")
        self.assertEqual(sorted(os.listdir(mdir)), ["default.nix", "workspaces"])
        wdir = os.path.join(mdir, "workspaces")
        self.assertEqual(sorted(os.listdir(wdir)), ["a1.nix", "a2.nix", "a3.nix", "a4.nix",
                                                    "taken.nix"])
        mask = os.umask(0)
        os.umask(mask)
        texts = set()
        for n in ("a1", "a2", "a3", "a4"):
            st = os.stat(os.path.join(wdir, n + ".nix"))
            self.assertEqual((st.st_mode & 0o7777, st.st_nlink), (0o644 & ~mask, 1))
            texts.add(repo.read("machines/atlas/workspaces/%s.nix" % n))
        self.assertEqual(len(texts), 1)
        self.assertIn(b"environment.systemPackages", texts.pop())
        self.assertEqual(repo.read("machines/atlas/workspaces/taken.nix"), b"# mine\n")
        st = os.stat(os.path.join(mdir, "default.nix"))
        self.assertEqual(st.st_nlink, 1)
        self.assertEqual(git(repo.path, "status", "--porcelain").split("\n"),
                         ["M  machines/atlas/default.nix"] +
                         ["A  machines/atlas/workspaces/a%d.nix" % i for i in (1, 2, 3, 4)] +
                         [""])

    def test_stale_temporary_removed_at_start(self):
        # a daemon killed between naming default.nix's replacement and the exchange leaves
        # `.default.nix.XXXXXX`; the next one (holding the repository's lock) removes it,
        # and nothing that only looks like one
        repo = self.make_repo(fixture("01-no-block.nix"), commit=False)
        mdir = os.path.join(repo.path, "machines", "atlas")
        for name in (".default.nix.backup", ".default.nix.orig"):
            with open(os.path.join(mdir, name), "w") as f:
                f.write("{ }\n")
        git(repo.path, "add", "-A")
        git(repo.path, "commit", "-qm", "init")
        with open(os.path.join(mdir, ".default.nix.Zx9Yw8"), "w") as f:
            f.write("{ left = true; }\n")
        repo, d = self.start(repo)
        self.assertEqual(sorted(n for n in os.listdir(mdir) if n.startswith(".")),
                         [".default.nix.backup", ".default.nix.orig"])
        self.assertEqual(git(repo.path, "status", "--porcelain"), "")
        self.assertOk(d.create("a1", "vm"))

    def test_dry_run(self):
        repo, d = self.start(fixture("02-nested-block.nix"))
        before = repo.snapshot()
        res = self.assertOk(d.create("lab", "vm", dryRun=True))
        self.assertUnchanged(before, repo)
        self.assertFalse(res["staged"])
        self.assertTrue(res["dryRun"])
        self.assertNotIn("verify", res)  # nothing was checked
        self.assertEqual(res["workspace"]["ip"], "192.168.83.11")
        # the workspace file it would write is not reported missing
        self.assertEqual([p["kind"] for p in res["workspace"]["problems"]], [])
        diff = res["diff"]
        self.assertIn("--- machines/atlas/default.nix", diff)
        self.assertIn("+    workspaces.lab = {\n", diff)
        self.assertIn("+++ machines/atlas/workspaces/lab.nix", diff)
        # the diff applies to the repository and gives what a real create writes
        p = subprocess.run(["git", "-C", repo.path, "apply", "--check", "-p0", "-"],
                           input=diff.encode(), capture_output=True)
        self.assertEqual(p.returncode, 0, p.stderr.decode())

    def test_verify_parse(self):
        if not have("nix-instantiate"):
            self.skipTest("nix-instantiate is not installed")
        repo, d = self.start(fixture("01-no-block.nix"), verify="parse")
        res = self.assertOk(d.create("dev", "container"))
        self.assertEqual(res["verify"]["level"], "parse")
        self.assertTrue(res["verify"]["ok"])

    def test_verify_parse_without_nix(self):
        repo, d = self.start(fixture("01-no-block.nix"), verify="parse",
                             env={"PATH": "/nonexistent"})
        before = repo.snapshot()
        err = self.assertErr(d.create("dev", "container"), 1040, "VERIFY_FAILED")
        self.assertIn("nix-instantiate", err["message"])
        self.assertNotIn("to check less", err["message"])  # parse is the least
        self.assertUnchanged(before, repo)

    def test_verify_build_failure_restores_everything(self):
        repo, d = self.start(fixture("03-dotted-top.nix"), verify="build",
                             build_command="echo building; echo 'error: boom' >&2; exit 3")
        before = repo.snapshot()
        err = self.assertErr(d.create("web", "container"), 1040, "VERIFY_FAILED")
        self.assertEqual(err["data"]["level"], "build")
        self.assertEqual(err["data"]["exitStatus"], 3)
        self.assertIn("error: boom", err["data"]["log"])
        self.assertIn("use --verify parse, or set build-command", err["message"])
        self.assertUnchanged(before, repo)
        # the hint names the setting of the level that failed
        err = self.assertErr(d.create("web", "container", verify="eval"), 1040,
                             "VERIFY_FAILED")
        self.assertEqual(err["data"]["level"], "eval")
        self.assertIn("use --verify parse, or set eval-command", err["message"])
        self.assertUnchanged(before, repo)
        self.assertEqual(git(repo.path, "status", "--porcelain"), "")
        # the address was not consumed
        res = self.assertOk(d.create("web", "container", verify="none"))
        self.assertEqual(res["workspace"]["ip"], "192.168.83.52")

    def test_build_does_not_hold_up_others(self):
        repo, d = self.start(fixture("03-dotted-top.nix"), verify="build",
                             build_command="sleep 2; exit 0")
        result = []
        t = threading.Thread(target=lambda: result.append(d.create("slow", "container")))
        t0 = time.time()
        t.start()
        time.sleep(0.3)
        for _ in range(5):
            self.assertIn("result", d.call("daemon.info"))
            self.assertIn("result", d.call("workspace.list"))
        self.assertLess(time.time() - t0, 1.5, "reads waited for the build")
        t.join(20)
        res = self.assertOk(result[0])
        self.assertTrue(res["verify"]["ok"])

    def test_failed_requests_leave_state_identical(self):
        repo, d = self.start(fixture("12-container-range-full.nix"))
        self.assertOk(d.create("v1", "vm"))
        before = repo.snapshot()
        for params in ({"name": "c90", "type": "container"}, {"name": "v1", "type": "vm"},
                       {"name": "Bad", "type": "vm"}, {"name": "x", "type": "blob"},
                       {"name": "v2", "type": "vm", "ip": "192.168.83.10"}):
            self.assertIn("error", d.call("workspace.create", params))
        self.assertUnchanged(before, repo)

    def test_removed_address_held_back(self):
        repo, d = self.start(fixture("03-dotted-top.nix"))
        sub = d.conn()
        self.assertOk(sub.call("events.subscribe"))
        text = repo.read(repo.machine_rel).decode()
        start = text.index("  sandboxed-workspace.workspaces.api")
        end = text.index("  };\n", start) + len("  };\n")
        repo.write(repo.machine_rel, text[:start] + text[end:])
        ev = sub.recv(timeout=10)["params"]
        self.assertEqual(ev["type"], "config.changed")
        # the state file is written off the event loop, just after the event
        state = os.path.join(repo.state_dir, "state.json")
        end = time.time() + 5
        while time.time() < end and not (os.path.exists(state) and
                                         "192.168.83.51" in open(state).read()):
            time.sleep(0.05)
        with open(state) as f:
            self.assertIn("192.168.83.51", f.read())
        res = self.assertOk(d.create("new1", "container"))
        self.assertEqual(res["workspace"]["ip"], "192.168.83.52",
                         "a just-released address must not be handed out again at once")
        # a restart remembers it; asking for it by name is allowed
        self.stop(d)
        repo, d = self.start(repo)
        self.assertEqual(self.assertOk(d.create("new2", "container"))["workspace"]["ip"],
                         "192.168.83.53")
        self.assertEqual(self.assertOk(d.create("new3", "container", ip="192.168.83.51"))
                         ["workspace"]["ip"], "192.168.83.51")

    def test_outside_edit_emits_config_changed(self):
        repo, d = self.start(fixture("03-dotted-top.nix"))
        sub = d.conn()
        self.assertOk(sub.call("events.subscribe"))
        text = repo.read(repo.machine_rel).replace(b'  networking.sandbox',
                                                   b'  sandboxed-workspace.workspaces.hand = { type = "vm"; config = ./workspaces/hand.nix; ip = "192.168.83.30"; };\n  networking.sandbox')
        repo.write(repo.machine_rel, text)
        ev = sub.recv(timeout=10)
        self.assertEqual(ev["params"]["type"], "config.changed")
        names = [w["name"] for w in self.assertOk(d.call("workspace.list"))["workspaces"]]
        self.assertIn("hand", names)


if __name__ == "__main__":
    main()
