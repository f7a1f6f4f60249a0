# SPDX-License-Identifier: MIT
"""wsctl against the real daemon: the commands a user types, their output and exit codes."""
import json
import os

from wslib import DaemonTest, fixture, git, main


class Wsctl(DaemonTest):
    def setUp(self):
        super().setUp()
        self.repo, self.d = self.start(fixture("03-dotted-top.nix"))

    def run_ok(self, *args):
        p = self.d.wsctl(*args)
        self.assertEqual(p.returncode, 0, "wsctl %s: %s" % (args, p.stderr.decode()))
        return p.stdout.decode()

    def test_create_tells_next_steps(self):
        out = self.run_ok("create", "web", "--type", "container")
        self.assertIn("192.168.83.52", out)
        self.assertIn("sudo nixos-rebuild switch --flake %s#atlas" % self.repo.path, out)
        self.assertIn("container@web.service", out)
        self.assertIn("ssh workspace-web", out)
        self.assertStaged(self.repo, ["machines/atlas/workspaces/web.nix", self.repo.machine_rel])

    def test_privilege_command_from_config(self):
        self.stop(self.d)
        self.repo, self.d = self.start(self.repo, config="privilege-command = doas\n")
        out = self.run_ok("create", "web", "--type", "vm")
        self.assertIn("doas nixos-rebuild switch --flake", out)
        self.assertIn("microvm@web.service", out)

    def test_list_table_and_json(self):
        out = self.run_ok("list")
        lines = out.splitlines()
        self.assertTrue(lines[0].startswith("NAME"))
        self.assertEqual(len(lines), 3)
        col = lines[0].index("TYPE")
        for l in lines[1:]:
            self.assertEqual(l[col:col + 9], "container")
        self.assertIn("docs", lines[1])
        self.assertIn("192.168.83.50", lines[1])
        data = json.loads(self.run_ok("list", "--json"))
        self.assertEqual([w["name"] for w in data["workspaces"]], ["docs", "api"])
        self.assertEqual(self.run_ok("list", "--names"), "docs\napi\n")

    def test_show_and_info(self):
        out = self.run_ok("show", "api")
        self.assertIn("192.168.83.51", out)
        self.assertIn("container@api.service", out)
        self.assertIn("machines/atlas/default.nix:11", out)
        info = self.run_ok("info")
        self.assertIn(self.repo.path, info)
        self.assertIn("atlas", info)
        data = json.loads(self.run_ok("info", "--json"))
        self.assertEqual(data["machine"], "atlas")

    def test_errors_and_exit_codes(self):
        before = self.repo.snapshot()
        p = self.d.wsctl("create", "api", "--type", "container")
        self.assertEqual(p.returncode, 1)
        self.assertIn("already declared", p.stderr.decode())
        self.assertEqual(p.stdout, b"")
        p = self.d.wsctl("show", "nosuch")
        self.assertEqual(p.returncode, 1)
        self.assertIn("NOT_FOUND", p.stderr.decode())
        p = self.d.wsctl("create", "x", "--type", "blob")
        self.assertEqual(p.returncode, 2)
        p = self.d.wsctl("create")
        self.assertEqual(p.returncode, 2)
        p = self.d.wsctl("frobnicate")
        self.assertEqual(p.returncode, 2)
        self.assertUnchanged(before, self.repo)
        p = self.d.wsctl("list", env={"WORKSPACED_SOCKET": "/nonexistent/ws.sock"})
        self.assertEqual(p.returncode, 69)
        self.assertIn("/nonexistent/ws.sock", p.stderr.decode())

    def test_help(self):
        for args in (("--help",), ("create", "--help"), ("list", "--help"), ("show", "--help"),
                     ("info", "--help"), ("hostkey", "--help"), ("events", "--help")):
            p = self.d.wsctl(*args)
            self.assertEqual(p.returncode, 0, args)
            self.assertIn("wsctl", p.stdout.decode())

    def test_wsctl_does_not_link_libgit2(self):
        from wslib import WSCTL
        import subprocess
        out = subprocess.run(["ldd", WSCTL], capture_output=True).stdout.decode()
        self.assertNotIn("libgit2", out)
        self.assertNotIn("libuv", out)
        self.assertNotIn("libsystemd", out)
        if "=>" not in out:
            # linked statically: none of their code may be inside either (each of these
            # libraries carries its own name, libuv its handle names, in its strings)
            with open(WSCTL, "rb") as f:
                data = f.read()
            for needle in (b"libgit2", b"uv_loop", b"sd_bus", b"sd-bus"):
                self.assertNotIn(needle, data)

    def test_dry_run(self):
        before = self.repo.snapshot()
        out = self.run_ok("create", "web", "--type", "container", "--dry-run")
        self.assertIn("+  sandboxed-workspace.workspaces.web = {", out)
        self.assertUnchanged(before, self.repo)


if __name__ == "__main__":
    main()
