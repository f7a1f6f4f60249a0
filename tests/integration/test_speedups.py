# SPDX-License-Identifier: MIT
"""Attacks on the shortcuts taken for speed: daemon.info answered from the cached model
while the machine directory is watched, its text cached per model, and the git index
parsed again only when it changed on disk. Each shortcut must answer what the slow path
would have answered."""
import json
import os
import time

from wslib import DaemonTest, fixture, git, main


def machine(names):
    """A machine file declaring @names, one container each."""
    text = "{ config, ... }:\n{\n  sandboxed-workspace = {\n    enable = true;\n"
    for i, n in enumerate(names):
        text += ('    workspaces.%s = { type = "container"; config = ./workspaces/%s.nix; '
                 'ip = "192.168.83.%d"; };\n' % (n, n, 50 + i))
    return text + "  };\n}\n"


class Info(DaemonTest):
    def setUp(self):
        super().setUp()
        self.repo, self.d = self.start(machine(["a"]))
        self.events = self.d.conn()
        self.assertIn("result", self.events.call("events.subscribe"))

    def info(self):
        return self.d.call("daemon.info")["result"]["workspaces"]

    def edit(self, names):
        """Writes the machine file by hand and waits until the daemon has re-read it."""
        self.repo.write(self.repo.machine_rel, machine(names))
        end = time.time() + 5
        while time.time() < end:
            ev = self.events.recv(timeout=max(0.05, end - time.time()))
            p = ev.get("params", {})
            if p.get("type") == "config.changed" and p.get("workspaces") == len(names):
                return
        self.fail("no config.changed for %d workspaces" % len(names))

    def test_info_follows_every_model(self):
        """The cached daemon.info text must be made again for each new model. Two hand
        edits within one second, with no request between them, free the model the text
        was made from and let the allocator hand its address to the newest one: the
        text must not be taken for current because the address is the same."""
        for _ in range(4):
            while time.time() % 1 > 0.1:  # the whole round within one second
                time.sleep(0.01)
            self.assertEqual(self.info(), 1)
            self.edit(["a", "b", "c"])
            self.edit(["a", "b", "c", "d"])
            self.assertEqual(self.info(), 4)
            self.assertEqual(len(self.d.call("workspace.list")["result"]["workspaces"]), 4)
            self.edit(["a"])

    def test_info_null_once_machine_file_deleted(self):
        """A deleted machine file does not parse: workspaces is null, as workspace.list
        fails, and not the count of the model read before."""
        self.assertEqual(self.info(), 1)
        os.unlink(os.path.join(self.repo.path, self.repo.machine_rel))
        time.sleep(0.3)  # the watcher has seen it
        self.assertIn("error", self.d.call("workspace.list"))
        self.assertIsNone(self.info())
        self.edit(["a", "b"])
        self.assertEqual(self.info(), 2)

    def test_info_after_machine_dir_replaced(self):
        """The watch follows the directory's inode: once machines/HOST is moved away and
        made again (a checkout of a branch without it and back), the new directory's
        changes must show in daemon.info, not the last count seen in the old one."""
        self.assertEqual(self.info(), 1)
        os.rename(self.repo.machine_dir, self.repo.machine_dir + ".old")
        time.sleep(0.3)
        self.assertIsNone(self.info())
        os.makedirs(self.repo.machine_dir)
        self.repo.write(self.repo.machine_rel, machine(["a", "b", "c"]))
        self.assertEqual(self.info(), 3)
        time.sleep(0.3)
        self.repo.write(self.repo.machine_rel, machine(["a", "b"]))
        time.sleep(0.3)
        self.assertEqual(self.info(), 2)
        self.assertEqual(len(self.d.call("workspace.list")["result"]["workspaces"]), 2)
        # and the new directory is watched again: a hand edit is announced
        self.repo.write(self.repo.machine_rel, machine(["a", "b", "c", "d"]))
        end = time.time() + 5
        seen = None
        while time.time() < end and seen != 4:
            p = self.events.recv(timeout=max(0.05, end - time.time())).get("params", {})
            if p.get("type") == "config.changed":
                seen = p.get("workspaces")
        self.assertEqual(seen, 4)
        self.assertEqual(self.info(), 4)


class Index(DaemonTest):
    def test_deleted_index_is_not_brought_back(self):
        """With .git/index deleted (rm .git/index, before a git reset), nothing is staged.
        A create stages its own edit only: it must not write back the entries the index
        held before it was deleted."""
        repo, d = self.start(fixture("03-dotted-top.nix"))
        self.assertIn("result", d.create("first", "container"))
        git(repo.path, "commit", "-qm", "first")
        os.unlink(os.path.join(repo.path, ".git", "index"))
        res = d.create("second", "container")
        self.assertIn("result", res, res)
        self.assertFalse(res["result"]["staged"], res)  # default.nix is not in the index
        self.assertIn("not tracked", res["result"]["stagedNote"])
        self.assertEqual(git(repo.path, "ls-files").split(),
                         ["machines/atlas/workspaces/second.nix"])

    def test_index_rewritten_by_git_between_creates(self):
        """git add, commit and reset between two creates: each create keeps what git
        left in the index (the index is parsed again only when it changed on disk)."""
        repo, d = self.start(fixture("03-dotted-top.nix"))
        self.assertIn("result", d.create("one", "container"))
        repo.write("notes.txt", "mine\n")
        git(repo.path, "add", "notes.txt")
        self.assertIn("result", d.create("two", "container"))
        self.assertIn("notes.txt", git(repo.path, "diff", "--cached", "--name-only").split())
        git(repo.path, "commit", "-qm", "c")
        git(repo.path, "reset", "-q", "HEAD~1")  # unstages everything again
        self.assertIn("result", d.create("three", "container"))
        self.assertEqual(sorted(git(repo.path, "diff", "--cached", "--name-only").split()),
                         ["machines/atlas/default.nix",
                          "machines/atlas/workspaces/three.nix"])
        staged = git(repo.path, "show", ":machines/atlas/default.nix")
        self.assertIn("workspaces.three =", staged)
        self.assertNotIn("workspaces.two =", staged)  # reset took it out of the index; not put back


class Prefilled(DaemonTest):
    """After each write the daemon prefills a temporary with the machine file as it last
    saw it, so that the next create writes only from its first changed byte. The file it
    leaves must be exactly the file as it was read plus the new entry, however the file
    changed by hand in between (and the index its version plus the same entry)."""

    def assert_one_insertion(self, before, after, name):
        import difflib
        a, b = before.splitlines(keepends=True), after.splitlines(keepends=True)
        ops = [op for op in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes()
               if op[0] != "equal"]
        self.assertEqual(len(ops), 1, ops)
        self.assertEqual(ops[0][0], "insert", ops)
        self.assertIn("workspaces.%s" % name, "".join(b[ops[0][3]:ops[0][4]]))

    def test_create_after_hand_edits(self):
        names = ["a%d" % i for i in range(20)]
        repo, d = self.start(machine(names))
        self.assertIn("result", d.create("first", "vm"))
        rel = repo.machine_rel
        edits = [
            lambda t: "# edited by hand at the very top\n" + t,      # differs at byte 0
            lambda t: t.replace("192.168.83.51", "192.168.83.88"),          # in the middle
            lambda t: machine(["a0"]),                                # much shorter
            lambda t: t.replace("  };\n}\n", "  };\n  # " + "x" * 9000 + "\n}\n"),  # longer
            lambda t: t,                                              # untouched
        ]
        for i, edit in enumerate(edits):
            time.sleep(0.2)  # the prefilled temporary of the last write is ready
            before = edit(repo.read(rel).decode())
            repo.write(rel, before)
            staged = git(repo.path, "show", ":" + rel)
            name = "n%d" % i
            res = d.create(name, "vm")
            self.assertIn("result", res, res)
            self.assert_one_insertion(before, repo.read(rel).decode(), name)
            # the index gets the same entry in its own version (the hand edit stays unstaged)
            self.assert_one_insertion(staged, git(repo.path, "show", ":" + rel), name)


if __name__ == "__main__":
    main()
