# SPDX-License-Identifier: MIT
"""Every fixture of fixtures/README.md through the real daemon: the exact expected file
where one exists, otherwise the properties the README names; in every successful case the
new workspace file exists, both files are staged (as the git CLI sees it) and
nix-instantiate --parse accepts what was written."""
import os

from wslib import DaemonTest, fixture, expected, git, nix_parse_ok, main


def single_insertion(old, new):
    """The inserted bytes when @new is @old with one span inserted, else None."""
    p = 0
    while p < len(old) and p < len(new) and old[p] == new[p]:
        p += 1
    s = 0
    while s < len(old) - p and old[len(old) - 1 - s] == new[len(new) - 1 - s]:
        s += 1
    if p + s != len(old):
        return None
    return new[p:len(new) - s]


class Fixtures(DaemonTest):
    def created(self, fix, name, type, want_ip, exp=None):
        repo, d = self.start(fixture(fix), verify="parse")
        old = repo.read(repo.machine_rel)
        r = d.create(name, type)
        res = self.assertOk(r)
        ws = res["workspace"]
        self.assertEqual(ws["name"], name)
        self.assertEqual(ws["type"], type)
        self.assertEqual(ws["ip"], want_ip)
        self.assertEqual(ws["config"], "./workspaces/%s.nix" % name)
        self.assertTrue(res["staged"])
        ws_rel = "machines/atlas/workspaces/%s.nix" % name
        self.assertEqual(sorted(res["files"]), sorted([ws_rel, repo.machine_rel]))
        new = repo.read(repo.machine_rel)
        if exp:
            self.assertEqual(new, expected(exp), "%s differs from %s" % (repo.machine_rel, exp))
        self.assertIsNotNone(single_insertion(old, new), "bytes outside the insertion changed")
        self.assertTrue(repo.exists(ws_rel))
        for rel in (repo.machine_rel, ws_rel):
            ok = nix_parse_ok(os.path.join(repo.path, rel))
            self.assertIn(ok, (True, None), "nix-instantiate --parse rejects " + rel)
        self.assertStaged(repo, [repo.machine_rel, ws_rel])
        status = git(repo.path, "status", "--porcelain").splitlines()
        self.assertIn("A  " + ws_rel, status)
        self.assertIn("M  " + repo.machine_rel, status)
        # the staged blob is exactly the file on disk
        self.assertEqual(git(repo.path, "show", ":" + repo.machine_rel).encode(), new)
        # and the daemon reads back what it wrote
        shown = self.assertOk(d.call("workspace.show", {"name": name}))
        self.assertEqual(shown["ip"], want_ip)
        return repo, d, old, new

    def test_01_no_block(self):
        self.created("01-no-block.nix", "dev", "container", "192.168.83.50",
                     "01-no-block.expected.nix")

    def test_02_nested_block(self):
        self.created("02-nested-block.nix", "lab", "vm", "192.168.83.11",
                     "02-nested-block.expected.nix")

    def test_03_dotted_top(self):
        self.created("03-dotted-top.nix", "web", "container", "192.168.83.52",
                     "03-dotted-top.expected.nix")

    def test_04_workspaces_set(self):
        self.created("04-workspaces-set.nix", "cache", "vm", "192.168.83.11",
                     "04-workspaces-set.expected.nix")

    def test_05_with_lib_comments(self):
        repo, d, old, new = self.created("05-with-lib-comments.nix", "blog", "container",
                                         "192.168.83.50")
        ins = single_insertion(old, new)
        # the entry lands in the real block: after the notes entry, before the block's end
        at = new.index(ins)
        self.assertGreater(at, new.index(b"workspaces.notes"))
        self.assertLess(at, new.rindex(b"  };\n}"))
        self.assertNotIn(b"blog", new[:new.index(b"sandboxed-workspace = {\n")])
        lst = self.assertOk(d.call("workspace.list"))["workspaces"]
        self.assertEqual([w["name"] for w in lst], ["notes", "blog"])

    def test_06_crlf(self):
        repo, d, old, new = self.created("06-crlf.nix", "win2", "container", "192.168.83.51",
                                         "06-crlf.expected.nix")
        self.assertNotIn(b"\n", new.replace(b"\r\n", b""), "a bare LF was written")

    def test_07_tabs_no_final_newline(self):
        repo, d, old, new = self.created("07-tabs-no-final-newline.nix", "tab2", "vm",
                                         "192.168.83.10",
                                         "07-tabs-no-final-newline.expected.nix")
        self.assertFalse(new.endswith(b"\n"))

    def test_08_one_line(self):
        repo, d, old, new = self.created("08-one-line.nix", "b", "container", "192.168.83.50")
        self.assertEqual(new.count(b"\n"), old.count(b"\n"), "the file stays one line")
        ws = self.assertOk(d.call("workspace.show", {"name": "b"}))
        self.assertEqual(ws["config"], "./workspaces/b.nix")

    def test_09_mixed_merge(self):
        self.created("09-mixed-merge.nix", "ml-two", "incus", "192.168.83.90",
                     "09-mixed-merge.expected.nix")

    def test_10_mkmerge_top(self):
        repo, d, old, new = self.created("10-mkmerge-top.nix", "gui2", "vm", "192.168.83.11")
        ins = single_insertion(old, new)
        self.assertGreater(new.index(ins), new.index(b"workspaces.gui"))
        self.assertLess(new.index(ins), new.index(b"  })"))

    def test_11_computed_ip(self):
        repo, d, old, new = self.created("11-computed-ip.nix", "gamma", "container",
                                         "192.168.83.51", "11-computed-ip.expected.nix")
        alpha = self.assertOk(d.call("workspace.show", {"name": "alpha"}))
        self.assertEqual(alpha["ip"], "192.168.83.50")

    def test_12_container_range_full(self):
        repo, d = self.start(fixture("12-container-range-full.nix"))
        before = repo.snapshot()
        r = d.create("c90", "container")
        self.assertErr(r, 1007, "RANGE_EXHAUSTED")
        self.assertUnchanged(before, repo)
        self.assertEqual(git(repo.path, "diff", "--cached", "--name-only"), "")
        # other ranges still work
        self.assertOk(d.create("v1", "vm"))

    def test_13_rec_and_inherit(self):
        repo, d, old, new = self.created("13-rec-and-inherit.nix", "plain", "vm",
                                         "192.168.83.10")
        ins = single_insertion(old, new)
        self.assertGreater(new.index(ins), new.index(b'"quoted-name"'))
        self.assertIn(b"plain = {", ins)

    def test_14_unparsable(self):
        repo, d = self.start(fixture("14-unparsable.nix"))
        before = repo.snapshot()
        r = d.create("x", "vm")
        err = self.assertErr(r, 1010, "CONFIG_UNPARSABLE")
        self.assertEqual(err["data"]["line"], 7)
        self.assertEqual(err["data"]["file"], repo.machine_rel)
        self.assertUnchanged(before, repo)
        # reads answer with the position too, and the daemon keeps serving
        err = self.assertErr(d.call("workspace.list"), 1010)
        self.assertEqual(err["data"]["line"], 7)
        self.assertIn("result", d.call("daemon.info"))

    def test_15_hand_edit_conflicts(self):
        repo, d = self.start(fixture("15-hand-edit-conflicts.nix"))
        lst = self.assertOk(d.call("workspace.list"))["workspaces"]
        by = {w["name"]: w for w in lst}
        self.assertEqual([w["name"] for w in lst], ["one", "two", "three"])
        for n in ("one", "two"):
            kinds = [p["kind"] for p in by[n]["problems"]]
            self.assertIn("IP_DUPLICATE", kinds, n)
        self.assertIn("IP_OUT_OF_RANGE", [p["kind"] for p in by["three"]["problems"]])
        self.assertNotIn("IP_DUPLICATE", [p["kind"] for p in by["three"]["problems"]])
        self.assertEqual(by["one"]["source"], {"file": repo.machine_rel, "line": 5})
        self.assertEqual(by["two"]["source"]["line"], 11)
        r = self.assertOk(d.create("four", "container"))
        self.assertEqual(r["workspace"]["ip"], "192.168.83.51")


if __name__ == "__main__":
    main()
