# SPDX-License-Identifier: MIT
"""workspaced under systemd: socket activation with the real systemd-socket-activate,
readiness, status, watchdog, reload and stop notifications on a notify socket the test
owns, a clean environment and descriptor table for children, and logging (levels,
--verbose/--quiet, no flood from clients that go away)."""
import os
import re
import signal
import socket
import stat
import subprocess
import time

from wslib import DaemonTest, Daemon, Conn, WORKSPACED, fixture, have, main

SERVICE_VARS = ("NOTIFY_SOCKET", "LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES",
                "WATCHDOG_USEC", "WATCHDOG_PID")
LOG_LINE = re.compile(r"^(workspaced(\[\d+\])?: )?(debug|info|warning|error): ")


class Notify:
    """An AF_UNIX datagram socket in a temporary directory, standing in for systemd's
    notify socket: every datagram is kept with the time it arrived."""

    def __init__(self, directory):
        self.path = os.path.join(directory, "notify")
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.s.bind(self.path)
        self.got = []

    def recv(self, timeout):
        """The next datagram as (arrival time, {field: value}), or None after @timeout."""
        self.s.settimeout(timeout)
        try:
            data = self.s.recv(4096)
        except socket.timeout:
            return None
        fields = {}
        for line in data.decode().split("\n"):
            if "=" in line:
                k, v = line.split("=", 1)
                fields[k] = v
        item = (time.monotonic(), fields)
        self.got.append(item)
        return item

    def wait_for(self, key, timeout=10, value=None):
        """Reads until a datagram with @key (= @value when given); returns its fields and
        every datagram read on the way (oldest first)."""
        end = time.monotonic() + timeout
        seen = []
        while True:
            left = end - time.monotonic()
            if left <= 0:
                raise AssertionError("no %s=%s on the notify socket; got %r" %
                                     (key, value or "*", [f for _, f in seen]))
            item = self.recv(left)
            if item is None:
                continue
            seen.append(item)
            if key in item[1] and (value is None or item[1][key] == value):
                return item[1], seen

    def drain(self, seconds):
        """Every datagram arriving during @seconds."""
        end = time.monotonic() + seconds
        out = []
        while True:
            left = end - time.monotonic()
            if left <= 0:
                return out
            item = self.recv(left)
            if item is not None:
                out.append(item)

    def close(self):
        self.s.close()


def wait_file(path, proc, timeout=10):
    end = time.time() + timeout
    while time.time() < end:
        if os.path.exists(path):
            return
        if proc.poll() is not None:
            raise AssertionError("process exited %d before %s appeared" % (proc.returncode,
                                                                           path))
        time.sleep(0.02)
    raise AssertionError("%s did not appear" % path)


def probe_command(out_dir):
    """A build command that records its environment and its descriptor table."""
    env_file = os.path.join(out_dir, "child-env")
    fd_file = os.path.join(out_dir, "child-fds")
    return (env_file, fd_file,
            "env > '%s'; ls -l /proc/self/fd > '%s'; exit 0" % (env_file, fd_file))


class ChildChecks:
    def assertCleanChild(self, env_file, fd_file):
        with open(env_file) as f:
            env = f.read().splitlines()
        self.assertTrue([l for l in env if l.startswith("PATH=")], "no environment recorded")
        leaked = [line for line in env if line.split("=", 1)[0] in SERVICE_VARS]
        self.assertEqual(leaked, [], "the build command inherited the service manager's "
                         "variables")
        with open(fd_file) as f:
            listing = f.read().splitlines()
        fds = {}
        for line in listing:
            m = re.search(r" (\d+) -> (.*)$", line)
            if m:
                fds[int(m.group(1))] = m.group(2)
        self.assertIn(0, fds, listing)
        self.assertIn(1, fds, listing)
        # Beyond stdio, ls has exactly one descriptor of its own: the directory it lists.
        extra = {n: t for n, t in fds.items() if n > 2}
        own = [n for n, t in extra.items() if re.match(r"^/proc/\d+/fd$", t)]
        self.assertLessEqual(len(own), 1, listing)
        leaked = {n: t for n, t in extra.items() if n not in own}
        self.assertEqual(leaked, {}, "the build command inherited descriptors:\n" +
                         "\n".join(listing))
        for n in (0, 1, 2):
            if n in fds:
                self.assertNotIn("socket:", fds[n], "stdio %d is a socket:\n%s" %
                                 (n, "\n".join(listing)))


class SocketActivation(DaemonTest, ChildChecks):
    def setUp(self):
        super().setUp()
        self.procs = []
        self.notifies = []

    def tearDown(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        for n in self.notifies:
            n.close()
        super().tearDown()

    def activate(self, repo, notify, extra_args=()):
        sock = os.path.join(repo.run_dir, "workspaced.sock")
        log_path = os.path.join(repo.tmp, "activate.log")
        args = ["systemd-socket-activate", "-l", sock,
                "--setenv=XDG_RUNTIME_DIR=" + repo.run_dir,
                "--setenv=XDG_CONFIG_HOME=" + os.path.join(repo.tmp, "config-home"),
                "--setenv=NOTIFY_SOCKET=" + notify.path,
                "--setenv=WATCHDOG_USEC=400000",
                WORKSPACED, "--repo", repo.path, "--machine", repo.host,
                "--socket", sock, "--state-dir", repo.state_dir,
                "--sandbox-root", repo.sandbox] + list(extra_args)
        log = open(log_path, "wb")
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self.procs.append(proc)
        return sock, proc, log_path

    def test_serves_the_passed_socket(self):
        if not have("systemd-socket-activate"):
            self.skipTest("systemd-socket-activate is not installed (package systemd)")
        repo = self.make_repo(fixture("03-dotted-top.nix"))
        notify = Notify(repo.tmp)
        self.notifies.append(notify)
        env_file, fd_file, cmd = probe_command(repo.tmp)
        sock, proc, log_path = self.activate(repo, notify,
                                             ["--verify", "build", "--build-command", cmd])
        wait_file(sock, proc)
        ino = os.stat(sock).st_ino
        # systemd-socket-activate starts the daemon on the first connection. It binds
        # before it listens: until then the path refuses connections.
        end = time.time() + 10
        while True:
            try:
                c = Conn(sock, timeout=20)
                break
            except ConnectionRefusedError:
                if time.time() > end:
                    raise
                time.sleep(0.02)
        self.assertEqual(os.stat(sock).st_ino, ino)
        try:
            r = c.call("daemon.info")
        finally:
            c.close()
        self.assertIn("result", r, r)
        fields, _ = notify.wait_for("READY", timeout=10, value="1")
        st = os.stat(sock)
        self.assertTrue(stat.S_ISSOCK(st.st_mode))
        self.assertEqual(st.st_ino, ino, "the daemon replaced the socket systemd passed")
        with open(log_path, "rb") as f:
            out = f.read().decode(errors="replace")
        self.assertNotIn("removed stale socket", out)

        # a build child: no service manager variables, no inherited descriptors
        c = Conn(sock, timeout=30)
        try:
            r = c.call("workspace.create", {"name": "probe", "type": "container"})
        finally:
            c.close()
        self.assertIn("result", r, r)
        self.assertTrue(r["result"]["verify"]["ok"], r)
        self.assertCleanChild(env_file, fd_file)

        # several clients in a row are served on the same socket
        for i in range(3):
            c = Conn(sock)
            self.assertIn("result", c.call("daemon.info", id=i + 1))
            c.close()

        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
        with open(log_path, "rb") as f:
            out = f.read().decode(errors="replace")
        self.assertEqual(proc.returncode, 0, out)
        for bad in ("AddressSanitizer", "runtime error:", "LeakSanitizer"):
            self.assertNotIn(bad, out)
        self.assertTrue(os.path.lexists(sock),
                        "the daemon unlinked the socket systemd owns")
        self.assertEqual(os.stat(sock).st_ino, ino)

    def test_listen_pid_of_another_process_is_ignored(self):
        repo = self.make_repo(fixture("03-dotted-top.nix"))
        env_file, fd_file, cmd = probe_command(repo.tmp)
        repo, d = self.start(repo, verify="build", build_command=cmd,
                             env={"LISTEN_FDS": "1", "LISTEN_PID": "1",
                                  "LISTEN_FDNAMES": "workspaced.socket"})
        st = os.stat(d.socket)
        self.assertTrue(stat.S_ISSOCK(st.st_mode), "the daemon did not bind --socket")
        self.assertEqual(stat.S_IMODE(st.st_mode), 0o600)
        self.assertIn("result", d.call("daemon.info"))
        out = d.output()
        self.assertNotIn("passed by systemd", out)
        r = d.create("probe", "container")
        self.assertIn("result", r, r)
        self.assertCleanChild(env_file, fd_file)
        self.stop(d)
        self.assertFalse(os.path.exists(d.socket), "the socket it bound is removed on stop")

    def test_passed_fd_not_a_socket_is_refused(self):
        """LISTEN_PID is ours and LISTEN_FDS=1 but fd 3 is a plain file: refuse to start."""
        repo = self.make_repo(fixture("01-no-block.nix"))
        sock = os.path.join(repo.run_dir, "workspaced.sock")
        code = ("import os,sys\n"
                "fd=os.open(%r, os.O_RDONLY)\n"
                "os.dup2(fd, 3)\n"
                "os.environ['LISTEN_FDS']='1'\n"
                "os.environ['LISTEN_PID']=str(os.getpid())\n"
                "os.execv(sys.argv[1], sys.argv[1:])\n" % os.path.join(repo.path, "flake.nix"))
        env = dict(os.environ, XDG_RUNTIME_DIR=repo.run_dir,
                   XDG_CONFIG_HOME=os.path.join(repo.tmp, "config-home"))
        env.pop("NOTIFY_SOCKET", None)
        p = subprocess.run(["python3", "-c", code, WORKSPACED, "--repo", repo.path,
                            "--machine", repo.host, "--socket", sock, "--state-dir",
                            repo.state_dir, "--sandbox-root", repo.sandbox],
                           capture_output=True, env=env, timeout=20)
        err = p.stderr.decode()
        self.assertNotEqual(p.returncode, 0, err)
        self.assertIn("not a listening Unix stream socket", err)
        # one descriptor was passed: no message may claim there were several
        self.assertNotIn("more than one", err)
        self.assertFalse(os.path.exists(sock))


class Readiness(DaemonTest):
    def setUp(self):
        super().setUp()
        self.notifies = []

    def tearDown(self):
        super().tearDown()
        for n in self.notifies:
            n.close()

    def notify_for(self, repo):
        n = Notify(repo.tmp)
        self.notifies.append(n)
        return n

    def test_ready_watchdog_reload_stopping(self):
        repo = self.make_repo(fixture("03-dotted-top.nix"))
        notify = self.notify_for(repo)
        d = Daemon(repo, wait=False, config="privilege-command = sudo\nlog-level = info\n",
                   env={"NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": "400000"})
        self.daemons.append(d)
        fields, before = notify.wait_for("READY", value="1", timeout=15)
        # READY=1 means the socket accepts connections now, not after a retry
        c = Conn(d.socket, timeout=10)
        self.assertIn("result", c.call("daemon.info"))
        c.close()
        statuses = [f["STATUS"] for _, f in before if "STATUS" in f]
        self.assertTrue(statuses, "no STATUS= up to READY=1: %r" % [f for _, f in before])
        self.assertTrue(all("\n" not in s and s for s in statuses), statuses)
        ready = [f for _, f in before if f.get("READY") == "1"]
        self.assertEqual(len(ready), 1)
        # the status says what it is doing: the machine file declares workspaces
        self.assertRegex(ready[0].get("STATUS", statuses[-1]), r"^watching \d+ workspaces$")

        # WATCHDOG=1 at about half of WATCHDOG_USEC: every ~200 ms
        got = notify.drain(1.2)
        pings = [t for t, f in got if f.get("WATCHDOG") == "1"]
        self.assertGreaterEqual(len(pings), 4, "watchdog pings in 1.2 s: %r" %
                                [f for _, f in got])
        self.assertLessEqual(len(pings), 9, "watchdog pings in 1.2 s: %r" %
                             [f for _, f in got])
        gaps = [b - a for a, b in zip(pings, pings[1:])]
        self.assertTrue(all(0.05 <= g <= 0.5 for g in gaps), "ping gaps %r" % gaps)
        self.assertFalse([f for _, f in got if "READY" in f], "READY=1 sent twice")

        # SIGHUP: RELOADING=1, the file is re-read, then READY=1 again
        info = d.call("daemon.info")["result"]
        self.assertEqual(info["privilegeCommand"], "sudo")
        with open(os.path.join(repo.tmp, "config"), "w") as f:
            f.write("privilege-command = doas\nlog-level = info\n")
        d.proc.send_signal(signal.SIGHUP)
        fields, seen = notify.wait_for("RELOADING", value="1", timeout=10)
        if "MONOTONIC_USEC" in fields:
            usec = int(fields["MONOTONIC_USEC"])
            self.assertLess(abs(usec / 1e6 - time.clock_gettime(time.CLOCK_MONOTONIC)), 5)
        fields, seen = notify.wait_for("READY", value="1", timeout=10)
        info = d.call("daemon.info")["result"]
        self.assertEqual(info["privilegeCommand"], "doas")

        # a broken file on reload: the old configuration stays, the daemon still serves
        with open(os.path.join(repo.tmp, "config"), "w") as f:
            f.write("privilege-command = run0\nlog-level = loud\n")
        d.proc.send_signal(signal.SIGHUP)
        notify.wait_for("RELOADING", value="1", timeout=10)
        notify.wait_for("READY", value="1", timeout=10)
        info = d.call("daemon.info")["result"]
        self.assertEqual(info["privilegeCommand"], "doas")
        self.assertIsNone(d.proc.poll())

        # SIGTERM: STOPPING=1, then a clean exit, and no pings after it
        d.proc.send_signal(signal.SIGTERM)
        notify.wait_for("STOPPING", value="1", timeout=10)
        d.proc.wait(timeout=20)
        self.assertEqual(d.proc.returncode, 0, d.output())
        self.daemons.remove(d)
        d.stop()

    def test_watchdog_pid_of_another_process(self):
        repo = self.make_repo(fixture("01-no-block.nix"))
        notify = self.notify_for(repo)
        repo, d = self.start(repo, env={"NOTIFY_SOCKET": notify.path,
                                        "WATCHDOG_USEC": "200000", "WATCHDOG_PID": "1"})
        notify.wait_for("READY", value="1", timeout=10)
        got = notify.drain(0.6)
        self.assertFalse([f for _, f in got if "WATCHDOG" in f],
                         "pinged a watchdog that is not ours: %r" % got)

    def test_abstract_notify_socket(self):
        repo = self.make_repo(fixture("01-no-block.nix"))
        name = "ws-e2e-notify-%d-%d" % (os.getpid(), time.monotonic_ns())
        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        s.bind("\0" + name)
        try:
            repo, d = self.start(repo, env={"NOTIFY_SOCKET": "@" + name})
            s.settimeout(10)
            data = s.recv(4096).decode()
            self.assertIn("READY=1", data.split("\n"))
        finally:
            s.close()

    def test_no_notify_socket(self):
        repo, d = self.start(fixture("01-no-block.nix"))
        self.assertIn("result", d.call("daemon.info"))
        d.proc.send_signal(signal.SIGHUP)
        time.sleep(0.2)
        self.assertIn("result", d.call("daemon.info"))
        out = self.stop(d)
        self.assertNotIn("NOTIFY_SOCKET", out)
        self.assertNotIn("error:", out)


class Logging(DaemonTest):
    def lines(self, out):
        return [l for l in out.splitlines() if l.strip()]

    def assertLevels(self, out):
        for line in self.lines(out):
            self.assertRegex(line, LOG_LINE, "a log line without a level")

    def session(self, extra_args=()):
        repo, d = self.start(fixture("03-dotted-top.nix"), extra_args=extra_args,
                             build_command="echo 'error: boom' >&2; exit 3")
        self.assertIn("result", d.call("daemon.info"))
        self.assertIn("result", d.create("web", "container"))
        self.assertIn("error", d.create("web", "container"))
        # a failed verification is logged as a warning
        self.assertIn("error", d.create("api2", "container", verify="build"))
        return self.stop(d)

    def test_levels_on_stderr(self):
        out = self.session()
        self.assertLevels(out)
        levels = [LOG_LINE.match(l).group(3) for l in self.lines(out)]
        self.assertIn("info", levels, out)
        self.assertIn("warning", levels, out)
        self.assertNotIn("debug", levels, out)

    def test_quiet(self):
        out = self.session(["--quiet"])
        self.assertLevels(out)
        self.assertFalse([l for l in self.lines(out) if LOG_LINE.match(l).group(3) in
                          ("info", "debug")], out)
        # the failed verification is a warning: still shown
        self.assertIn("warning:", out)

    def test_verbose(self):
        out = self.session(["--verbose"])
        self.assertLevels(out)
        levels = [LOG_LINE.match(l).group(3) for l in self.lines(out)]
        self.assertIn("info", levels, out)
        self.assertIn("debug", levels, "--verbose logged no debug line in a session with "
                      "a connection, requests, a write and a stop:\n" + out)

    def test_verbose_watchdog(self):
        """The one debug message we know of: how often the watchdog is pinged."""
        repo = self.make_repo(fixture("01-no-block.nix"))
        n = Notify(repo.tmp)
        try:
            repo, d = self.start(repo, extra_args=["--verbose"],
                                 env={"NOTIFY_SOCKET": n.path, "WATCHDOG_USEC": "400000"})
            out = self.stop(d)
        finally:
            n.close()
        self.assertLevels(out)
        self.assertRegex(out, r"debug: .*watchdog")

    def test_clients_going_away_do_not_flood(self):
        repo, d = self.start(fixture("03-dotted-top.nix"))
        time.sleep(0.2)
        start_len = len(d.output())
        for i in range(20):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(d.socket)
            if i % 4 == 0:
                # half a request, then gone
                s.sendall(b'{"jsonrpc":"2.0","id":1,"method":"daemon.in')
            elif i % 4 == 1:
                # a whole request, gone before the reply
                s.sendall(b'{"jsonrpc":"2.0","id":1,"method":"workspace.list"}\n')
            elif i % 4 == 2:
                # a byte at a time, then gone
                for b in b'{"jsonrpc":"2.0","id":1,':
                    s.send(bytes([b]))
            else:
                # many requests, never read, then gone
                s.sendall(b'{"jsonrpc":"2.0","id":1,"method":"daemon.info"}\n' * 50)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            s.close()
        time.sleep(0.5)
        self.assertIn("result", d.call("daemon.info"), "the daemon still serves")
        during = d.output()[start_len:]
        self.assertLevels(during)
        self.assertLessEqual(len(self.lines(during)), 8,
                             "20 clients going away logged:\n" + during)
        out = self.stop(d)
        self.assertLevels(out)
        self.assertLessEqual(len(self.lines(out)), 20, out)

    def test_journal_stream(self):
        if not os.path.exists("/run/systemd/journal/socket"):
            self.skipTest("journald is not reachable here (no /run/systemd/journal/socket)")
        if not have("journalctl"):
            self.skipTest("journalctl is missing")
        repo = self.make_repo(fixture("03-dotted-top.nix"))
        tag = "ws-e2e-%d" % time.monotonic_ns()
        # systemd-cat gives the daemon a stderr connected to the journal with JOURNAL_STREAM
        p = subprocess.Popen(["systemd-cat", "-t", tag, WORKSPACED, "--repo", repo.path,
                              "--machine", repo.host, "--socket",
                              os.path.join(repo.run_dir, "workspaced.sock"),
                              "--state-dir", repo.state_dir, "--sandbox-root", repo.sandbox,
                              "--verify", "none"])
        try:
            sock = os.path.join(repo.run_dir, "workspaced.sock")
            wait_file(sock, p)
            time.sleep(0.2)
            c = Conn(sock)
            self.assertIn("result", c.call("workspace.create",
                                           {"name": "web", "type": "container"}))
            c.close()
        finally:
            p.send_signal(signal.SIGTERM)
            p.wait(timeout=20)
        time.sleep(0.5)
        j = subprocess.run(["journalctl", "-o", "verbose", "--no-pager",
                            "SYSLOG_IDENTIFIER=workspaced", "WORKSPACE=web"],
                           capture_output=True, timeout=20)
        self.assertIn(b"WORKSPACE=web", j.stdout)
        self.assertIn(b"PRIORITY=6", j.stdout)


if __name__ == "__main__":
    main()
