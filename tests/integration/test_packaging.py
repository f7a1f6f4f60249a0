# SPDX-License-Identifier: MIT
"""Packaging: the systemd user units pass `systemd-analyze verify` and say what the daemon
needs (Type=notify, a watchdog, the socket path the daemon defaults to), every Nix file of
the project parses (nix-instantiate --parse and workspaced --check), and `cmake --install`
puts binaries, units, man pages and completions where the build system says."""
import os
import re
import shutil
import socket
import stat
import subprocess
import tempfile
import time
import unittest

from wslib import Repo, WORKSPACED, fixture, have, main

SOURCE = os.environ.get("WS_SOURCE_DIR",
                        os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
BUILD = os.environ.get("WS_BUILD_DIR", os.path.dirname(os.path.abspath(WORKSPACED)))


def cmake_cache():
    """Every NAME:TYPE=VALUE of the build directory's CMakeCache.txt."""
    values = {}
    path = os.path.join(BUILD, "CMakeCache.txt")
    if not os.path.exists(path):
        return values
    with open(path) as f:
        for line in f:
            m = re.match(r"^([A-Za-z0-9_.-]+):[A-Z_]+=(.*)$", line.rstrip("\n"))
            if m:
                values[m.group(1)] = m.group(2)
    return values


def read_unit(path):
    """{section: [(key, value), ...]} of a unit file (comments and blank lines dropped)."""
    sections = {}
    current = None
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line or line[0] in "#;":
                continue
            m = re.match(r"^\[(.+)\]$", line)
            if m:
                current = sections.setdefault(m.group(1), [])
                continue
            k, _, v = line.partition("=")
            current.append((k.strip(), v.strip()))
    return sections


def unit_values(unit, section, key):
    return [v for k, v in unit.get(section, []) if k == key]


def seconds(text):
    """A systemd time span like 30s, 1min 30s, 500ms or a bare number of seconds."""
    units = {"us": 1e-6, "ms": 1e-3, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600}
    total = 0.0
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", text)
    if not parts or re.sub(r"[\d.\sa-z]", "", text):
        raise ValueError(text)
    for n, u in parts:
        total += float(n) * units[u or "s"]
    return total


class Units(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="ws-pkg-")
        self.service_in = os.path.join(BUILD, "systemd", "workspaced.service")
        self.socket_in = os.path.join(SOURCE, "systemd", "workspaced.socket")
        if not os.path.exists(self.service_in):
            self.fail("the build directory has no configured systemd/workspaced.service")

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def test_service_and_socket_settings(self):
        svc = read_unit(self.service_in)
        self.assertEqual(unit_values(svc, "Service", "Type"), ["notify"])
        wd = unit_values(svc, "Service", "WatchdogSec")
        self.assertEqual(len(wd), 1, "WatchdogSec= missing")
        self.assertGreater(seconds(wd[0]), 0)
        self.assertEqual(unit_values(svc, "Service", "Restart"), ["on-failure"])
        self.assertIn(unit_values(svc, "Service", "NotifyAccess"), ([], ["main"]))
        reload = unit_values(svc, "Service", "ExecReload")
        self.assertTrue(reload and "HUP" in reload[0], "ExecReload= should send SIGHUP")
        cache = cmake_cache()
        prefix = cache.get("CMAKE_INSTALL_PREFIX") or "/usr/local"
        bindir = cache.get("CMAKE_INSTALL_BINDIR") or "bin"
        full_bindir = bindir if os.path.isabs(bindir) else os.path.join(prefix, bindir)
        exec_start = unit_values(svc, "Service", "ExecStart")
        self.assertEqual(len(exec_start), 1)
        self.assertEqual(exec_start[0].split()[0], os.path.join(full_bindir, "workspaced"),
                         "ExecStart= must name the installed binary")
        self.assertNotIn("@", exec_start[0], "an unconfigured @VARIABLE@ is left")

        sock = read_unit(self.socket_in)
        self.assertEqual(unit_values(sock, "Socket", "ListenStream"), ["%t/workspaced.sock"])
        self.assertEqual(unit_values(sock, "Socket", "SocketMode"), ["0600"])
        # the socket unit activates this service: same name, or an explicit Service=
        self.assertIn(unit_values(sock, "Socket", "Service"), ([], ["workspaced.service"]))
        self.assertIn(unit_values(sock, "Socket", "Accept"), ([], ["no"], ["false"]))

    def test_socket_unit_matches_daemon_default(self):
        """ListenStream=%t/workspaced.sock is where the daemon binds without --socket."""
        repo = Repo(fixture("01-no-block.nix"))
        try:
            env = dict(os.environ, XDG_RUNTIME_DIR=repo.run_dir,
                       XDG_CONFIG_HOME=os.path.join(repo.tmp, "config-home"))
            for k in ("NOTIFY_SOCKET", "LISTEN_FDS", "LISTEN_PID"):
                env.pop(k, None)
            log = open(os.path.join(repo.tmp, "log"), "wb")
            p = subprocess.Popen([WORKSPACED, "--repo", repo.path, "--machine", repo.host,
                                  "--state-dir", repo.state_dir, "--sandbox-root",
                                  repo.sandbox, "--verify", "none"],
                                 stdout=log, stderr=subprocess.STDOUT, env=env)
            log.close()
            path = os.path.join(repo.run_dir, "workspaced.sock")
            try:
                end = time.time() + 15
                while not os.path.exists(path) and time.time() < end and p.poll() is None:
                    time.sleep(0.02)
                if not os.path.exists(path):
                    with open(os.path.join(repo.tmp, "log")) as f:
                        self.fail("no socket at %t/workspaced.sock:\n" + f.read())
                self.assertTrue(stat.S_ISSOCK(os.stat(path).st_mode))
                self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
                # the file appears at bind(), a moment before listen(): retry briefly
                end = time.time() + 5
                while True:
                    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                    try:
                        s.connect(path)
                        break
                    except ConnectionRefusedError:
                        if time.time() > end:
                            raise
                        time.sleep(0.02)
                    finally:
                        s.close()
            finally:
                p.terminate()
                p.wait(timeout=20)
        finally:
            repo.cleanup()

    def analyze(self, *units, man=False, man_dir=None):
        rt = os.path.join(self.tmp, "runtime")
        os.makedirs(rt, mode=0o700, exist_ok=True)
        env = dict(os.environ, XDG_RUNTIME_DIR=rt, HOME=self.tmp,
                   XDG_CONFIG_HOME=os.path.join(self.tmp, "config"))
        env.pop("SYSTEMD_LOG_LEVEL", None)
        if man_dir:
            env["MANPATH"] = man_dir
        args = ["systemd-analyze", "verify", "--user", "--man=%s" % ("yes" if man else "no")]
        p = subprocess.run(args + list(units), capture_output=True, env=env, timeout=120,
                           cwd=self.tmp)
        out = (p.stdout + p.stderr).decode(errors="replace")
        if "Failed to initialize manager" in out or "Failed to lookup" in out:
            self.skipTest("systemd-analyze cannot run here: " + out.strip())
        return p.returncode, out

    def test_systemd_analyze_verify(self):
        if not have("systemd-analyze"):
            self.skipTest("systemd-analyze is not installed")
        d = os.path.join(self.tmp, "units")
        os.makedirs(d)
        svc = os.path.join(d, "workspaced.service")
        sock = os.path.join(d, "workspaced.socket")
        with open(self.service_in) as f:
            text = f.read()
        # ExecStart names the install bindir; point it at the binary we built
        text, n = re.subn(r"^ExecStart=\S+", "ExecStart=" + os.path.abspath(WORKSPACED),
                          text, flags=re.M)
        self.assertEqual(n, 1)
        with open(svc, "w") as f:
            f.write(text)
        shutil.copy(self.socket_in, sock)

        # the checker finds mistakes at all: a broken copy draws complaints
        bad_dir = os.path.join(self.tmp, "bad")
        os.makedirs(bad_dir)
        with open(os.path.join(bad_dir, "workspaced.service"), "w") as f:
            f.write(text.replace("Type=notify", "Type=notifyy"))
        rc, out = self.analyze(os.path.join(bad_dir, "workspaced.service"))
        self.assertIn("notifyy", out, "systemd-analyze did not complain about a bad unit")

        rc, out = self.analyze(svc, sock)
        self.assertEqual(rc, 0, out)
        self.assertEqual(out.strip(), "", "systemd-analyze verify complained:\n" + out)

        # Documentation=man:... names pages the build makes
        docs = os.path.join(BUILD, "docs")
        if not all(os.path.exists(os.path.join(docs, p)) for p in ("wsctl.1", "workspaced.8")):
            self.skipTest("man pages were not built (scdoc missing?)")
        man_dir = os.path.join(self.tmp, "man")
        for page, sec in (("wsctl.1", "1"), ("workspaced.8", "8")):
            os.makedirs(os.path.join(man_dir, "man" + sec), exist_ok=True)
            shutil.copy(os.path.join(docs, page), os.path.join(man_dir, "man" + sec, page))
        if have("man"):
            rc, out = self.analyze(svc, sock, man=True, man_dir=man_dir)
            self.assertEqual(rc, 0, out)
            self.assertEqual(out.strip(), "", "systemd-analyze verify --man complained:\n" +
                             out)


def project_nix_files():
    skip = {os.path.join(SOURCE, "tests", "nix-syntax", "cases"),
            os.path.join(SOURCE, "tests", "data"), os.path.join(SOURCE, ".git")}
    found = []
    for root, dirs, files in os.walk(SOURCE):
        keep = []
        for d in dirs:
            p = os.path.join(root, d)
            if p in skip or os.path.islink(p):
                continue
            # build directories (ours and other engineers') are not part of the project
            if os.path.exists(os.path.join(p, "CMakeCache.txt")):
                continue
            keep.append(d)
        dirs[:] = keep
        for f in files:
            p = os.path.join(root, f)
            if f.endswith(".nix") and not os.path.islink(p):
                found.append(p)
    return sorted(found)


class NixFiles(unittest.TestCase):
    def setUp(self):
        self.files = project_nix_files()
        rel = [os.path.relpath(p, SOURCE) for p in self.files]
        self.assertIn("flake.nix", rel)
        self.assertTrue([r for r in rel if r.startswith("nix/")], rel)
        self.assertTrue([r for r in rel if r.startswith("examples/")], rel)

    def test_nix_instantiate_parse(self):
        if not have("nix-instantiate"):
            self.skipTest("nix-instantiate is not installed")
        bad = []
        for path in self.files:
            p = subprocess.run(["nix-instantiate", "--parse", path], capture_output=True,
                               timeout=60)
            if p.returncode != 0:
                bad.append("%s: %s" % (os.path.relpath(path, SOURCE),
                                       p.stderr.decode(errors="replace").strip()))
        self.assertEqual(bad, [])

    def test_workspaced_check(self):
        p = subprocess.run([WORKSPACED, "--check", *self.files], capture_output=True,
                           timeout=60)
        out = p.stdout.decode(errors="replace")
        self.assertEqual(p.returncode, 0, out + p.stderr.decode(errors="replace"))
        lines = out.splitlines()
        self.assertEqual(sorted(lines), sorted("%s: ok" % f for f in self.files), out)


class Install(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="ws-install-")
        self.cache = cmake_cache()
        if not self.cache:
            self.skipTest("no CMakeCache.txt in %s" % BUILD)
        if not have("cmake"):
            self.skipTest("cmake is missing")

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def install(self, prefix):
        dest = os.path.join(self.tmp, "dest")
        env = dict(os.environ, DESTDIR=dest)
        p = subprocess.run(["cmake", "--install", BUILD, "--prefix", prefix],
                           capture_output=True, env=env, timeout=120)
        self.assertEqual(p.returncode, 0, (p.stdout + p.stderr).decode(errors="replace"))
        return dest

    def under(self, dest, prefix, rel):
        p = rel if os.path.isabs(rel) else os.path.join(prefix, rel)
        return dest + p

    def pkg_var(self, package, var, prefix, datadir=None):
        if not have("pkg-config"):
            return None
        args = ["pkg-config", "--variable=" + var, "--define-variable=prefix=" + prefix]
        if datadir:
            args.append("--define-variable=datadir=" + datadir)
        p = subprocess.run(args + [package], capture_output=True)
        out = p.stdout.decode().strip()
        return out if p.returncode == 0 and out else None

    def expected_paths(self, prefix):
        """What the build system promises, computed as systemd/ and docs/CMakeLists.txt
        say, for an install under @prefix."""
        c = self.cache
        bindir = c.get("CMAKE_INSTALL_BINDIR") or "bin"
        dataroot = c.get("CMAKE_INSTALL_DATAROOTDIR") or "share"
        datadir = c.get("CMAKE_INSTALL_DATADIR") or dataroot
        mandir = c.get("CMAKE_INSTALL_MANDIR") or os.path.join(dataroot, "man")
        units = c.get("WS_SYSTEMD_USER_UNIT_DIR") or \
            self.pkg_var("systemd", "systemduserunitdir", prefix) or \
            os.path.join(prefix, "lib", "systemd", "user")
        bash = c.get("WS_BASH_COMPLETION_DIR") or \
            self.pkg_var("bash-completion", "completionsdir", prefix,
                         os.path.join(prefix, datadir)) or \
            os.path.join(datadir, "bash-completion", "completions")
        zsh = c.get("WS_ZSH_COMPLETION_DIR") or os.path.join(datadir, "zsh", "site-functions")
        fish = c.get("WS_FISH_COMPLETION_DIR") or \
            os.path.join(datadir, "fish", "vendor_completions.d")
        return {
            "workspaced": os.path.join(bindir, "workspaced"),
            "wsctl": os.path.join(bindir, "wsctl"),
            "service": os.path.join(units, "workspaced.service"),
            "socket": os.path.join(units, "workspaced.socket"),
            "man1": os.path.join(mandir, "man1", "wsctl.1"),
            "man8": os.path.join(mandir, "man8", "workspaced.8"),
            "bash": os.path.join(bash, "wsctl"),
            "zsh": os.path.join(zsh, "_wsctl"),
            "fish": os.path.join(fish, "wsctl.fish"),
        }

    def check_tree(self, dest, prefix):
        paths = self.expected_paths(prefix)
        have_man = os.path.exists(os.path.join(BUILD, "docs", "wsctl.1"))
        if not have("scdoc") and not have_man:
            print("scdoc is missing: the man pages are not checked")
            del paths["man1"], paths["man8"]
        got = {}
        for name, rel in paths.items():
            p = self.under(dest, prefix, rel)
            self.assertTrue(os.path.isfile(p), "%s is not installed at %s; the tree has:\n%s"
                            % (name, p, "\n".join(self.listing(dest))))
            self.assertGreater(os.path.getsize(p), 0, p)
            got[name] = p
        for b in ("workspaced", "wsctl"):
            self.assertTrue(os.access(got[b], os.X_OK), got[b])
        # nothing lands outside the prefix
        outside = [f for f in self.listing(dest) if not f.startswith(prefix.rstrip("/") + "/")]
        self.assertEqual(outside, [], "installed outside the prefix %s" % prefix)
        return got

    def listing(self, dest):
        out = []
        for root, _, files in os.walk(dest):
            for f in files:
                out.append(os.path.join(root, f)[len(dest):])
        return sorted(out)

    def check_contents(self, got):
        p = subprocess.run([got["workspaced"], "--version"], capture_output=True, timeout=10)
        self.assertEqual(p.returncode, 0)
        self.assertIn(b"workspaced", p.stdout)
        p = subprocess.run([got["wsctl"], "--help"], capture_output=True, timeout=10)
        self.assertEqual(p.returncode, 0, p.stderr)
        if "man1" in got:
            for page, name in (("man1", "wsctl"), ("man8", "workspaced")):
                with open(got[page], "rb") as f:
                    text = f.read().decode(errors="replace")
                self.assertRegex(text, r"(?m)^\.TH ", got[page])
                if have("man"):
                    r = subprocess.run(["man", "-l", "-P", "cat", got[page]],
                                       capture_output=True, timeout=30,
                                       env=dict(os.environ, MANWIDTH="80"))
                    self.assertEqual(r.returncode, 0, r.stderr)
                    rendered = r.stdout.decode(errors="replace")
                    self.assertIn("NAME", rendered)
                    self.assertIn(name, rendered)
        p = subprocess.run(["bash", "-n", got["bash"]], capture_output=True)
        self.assertEqual(p.returncode, 0, p.stderr)
        with open(got["bash"]) as f:
            self.assertIn("complete", f.read())
        with open(got["zsh"]) as f:
            self.assertTrue(f.readline().startswith("#compdef"), got["zsh"])
        if have("zsh"):
            p = subprocess.run(["zsh", "-n", got["zsh"]], capture_output=True)
            self.assertEqual(p.returncode, 0, p.stderr)
        with open(got["fish"]) as f:
            self.assertIn("complete -c wsctl", f.read())
        if have("fish"):
            p = subprocess.run(["fish", "-n", got["fish"]], capture_output=True)
            self.assertEqual(p.returncode, 0, p.stderr)

    def test_install_configured_prefix(self):
        """DESTDIR=tmp cmake --install BUILD --prefix <the configured prefix>."""
        prefix = self.cache.get("CMAKE_INSTALL_PREFIX") or "/usr/local"
        dest = self.install(prefix)
        got = self.check_tree(dest, prefix)
        self.check_contents(got)
        # the service starts the binary that was installed
        with open(got["service"]) as f:
            m = re.search(r"(?m)^ExecStart=(\S+)", f.read())
        self.assertEqual(dest + m.group(1), got["workspaced"])

    def test_install_other_prefix(self):
        """DESTDIR=tmp cmake --install BUILD --prefix P: everything follows P, the units
        too (systemd's pkg-config unit dir relative to the prefix)."""
        prefix = "/opt/ws-e2e-prefix"
        dest = self.install(prefix)
        got = self.check_tree(dest, prefix)
        self.check_contents(got)


if __name__ == "__main__":
    main()
