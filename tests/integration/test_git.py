# SPDX-License-Identifier: MIT
"""Every row of cases/git.md: the index lock, ownership, start-up refusals, concurrency,
what is staged and what is left alone."""
import os
import subprocess
import threading
import time

from wslib import (DaemonTest, Daemon, Repo, WORKSPACED, fixture, git, nix_parse_ok, main)


class Git(DaemonTest):
    def test_index_lock_busy_then_ok(self):
        repo, d = self.start(fixture("03-dotted-top.nix"))
        lock = os.path.join(repo.path, ".git", "index.lock")
        with open(lock, "w") as f:
            f.write("held by another git\n")
        before = repo.snapshot()
        t0 = time.time()
        r = d.create("locked", "container")
        elapsed = time.time() - t0
        err = self.assertErr(r, 1051, "BUSY")
        self.assertIn("index.lock", err["message"])
        self.assertLess(elapsed, 1.5, "the retry must be bounded")
        self.assertTrue(os.path.exists(lock), "the daemon must never delete the lock")
        self.assertUnchanged(before, repo)
        os.unlink(lock)
        res = self.assertOk(d.create("locked", "container"))
        self.assertEqual(res["workspace"]["ip"], "192.168.83.52", "the address is free again")

    def test_foreign_owner_refused(self):
        if os.geteuid() != 0:
            self.skipTest("needs root to chown")
        repo = self.make_repo(fixture("01-no-block.nix"))
        before = repo.snapshot()
        subprocess.run(["chown", "-R", "65534:65534", os.path.join(repo.path, ".git")],
                       check=True)
        d = Daemon(repo, wait=False)
        d.proc.wait(timeout=10)
        out = d.output()
        self.assertNotEqual(d.proc.returncode, 0)
        self.assertIn("65534", out)
        self.assertIn("0", out)
        self.assertIn("safe.directory", out)
        subprocess.run(["chown", "-R", "0:0", os.path.join(repo.path, ".git")], check=True)
        self.assertUnchanged(before, repo)

    def test_not_a_repository(self):
        repo = self.make_repo(fixture("01-no-block.nix"))
        os.rename(os.path.join(repo.path, ".git"), os.path.join(repo.tmp, "git-moved"))
        d = Daemon(repo, wait=False)
        d.proc.wait(timeout=10)
        self.assertNotEqual(d.proc.returncode, 0)
        self.assertIn(repo.path, d.output())
        self.assertIn("git", d.output().lower())
        self.assertFalse(os.path.exists(d.socket))

    def test_missing_machine_dir(self):
        repo = self.make_repo(fixture("01-no-block.nix"))
        repo.host = "nosuch"
        d = Daemon(repo, wait=False)
        d.proc.wait(timeout=10)
        self.assertNotEqual(d.proc.returncode, 0)
        self.assertIn("machines/nosuch", d.output())
        self.assertFalse(os.path.exists(d.socket))

    def concurrent(self, n):
        repo, d = self.start(fixture("01-no-block.nix"))
        results = [None] * n

        def one(i):
            c = d.conn()
            results[i] = c.call("workspace.create", {"name": "c%d" % i, "type": "container"})
            c.close()

        threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        ips = [self.assertOk(r)["workspace"]["ip"] for r in results]
        self.assertEqual(len(set(ips)), n, "addresses shared: %r" % ips)
        self.assertEqual(sorted(ips, key=lambda s: int(s.rsplit(".", 1)[1])),
                         ["192.168.83.%d" % (50 + i) for i in range(n)])
        self.assertIn(nix_parse_ok(os.path.join(repo.path, repo.machine_rel)), (True, None))
        lst = self.assertOk(d.call("workspace.list"))["workspaces"]
        self.assertEqual(len(lst), n)
        stat = git(repo.path, "diff", "--cached", "--stat")
        self.assertIn("%d files changed" % (n + 1), stat)
        return repo

    def test_ten_concurrent_creates(self):
        self.concurrent(10)

    def test_twenty_concurrent_creates(self):
        self.concurrent(20)

    def test_staged_result(self):
        repo, d = self.start(fixture("02-nested-block.nix"))
        self.assertOk(d.create("lab", "vm"))
        names = git(repo.path, "diff", "--cached", "--name-only").split()
        self.assertEqual(sorted(names), sorted(["machines/atlas/workspaces/lab.nix",
                                                repo.machine_rel]))
        status = git(repo.path, "status", "--porcelain").splitlines()
        self.assertIn("A  machines/atlas/workspaces/lab.nix", status)
        self.assertIn("M  " + repo.machine_rel, status)

    def test_unrelated_unstaged_changes_stay_unstaged(self):
        repo = self.make_repo(fixture("03-dotted-top.nix"),
                              extra_files={"README": "hello\n"})
        repo.write("README", "hello, changed\n")
        repo.write("untracked.txt", "new\n")
        repo, d = self.start(repo)
        self.assertOk(d.create("web", "container"))
        status = git(repo.path, "status", "--porcelain").splitlines()
        self.assertIn(" M README", status)
        self.assertIn("?? untracked.txt", status)
        self.assertEqual(sorted(git(repo.path, "diff", "--cached", "--name-only").split()),
                         sorted(["machines/atlas/workspaces/web.nix", repo.machine_rel]))

    def test_unstaged_changes_in_default_nix_stay_unstaged(self):
        repo = self.make_repo(fixture("03-dotted-top.nix"))
        text = repo.read(repo.machine_rel)
        edited = text.replace(b'"wlp2s0"', b'"wlp3s0"')
        self.assertNotEqual(edited, text)
        repo.write(repo.machine_rel, edited)
        repo, d = self.start(repo)
        res = self.assertOk(d.create("web", "container"))
        self.assertTrue(res["staged"])
        staged = git(repo.path, "diff", "--cached", "--", repo.machine_rel)
        self.assertIn("+  sandboxed-workspace.workspaces.web = {", staged)
        self.assertNotIn("wlp3s0", staged, "the user's own edit was staged")
        unstaged = git(repo.path, "diff", "--", repo.machine_rel)
        self.assertIn("+  networking.sandbox.upstreamInterface = \"wlp3s0\";", unstaged)
        self.assertNotIn("workspaces.web", unstaged)
        # the work tree has both
        now = repo.read(repo.machine_rel)
        self.assertIn(b"wlp3s0", now)
        self.assertIn(b"workspaces.web", now)
        status = git(repo.path, "status", "--porcelain").splitlines()
        self.assertIn("MM " + repo.machine_rel, status)


if __name__ == "__main__":
    main()
