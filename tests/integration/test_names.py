# SPDX-License-Identifier: MIT
"""Every row of cases/names.md through the real daemon."""
from wslib import DaemonTest, fixture, git, main


class Names(DaemonTest):
    def setUp(self):
        super().setUp()
        self.repo, self.d = self.start(fixture("01-no-block.nix"))

    def ok(self, name, type):
        r = self.d.create(name, type)
        self.assertIn("result", r, "%s %s: %r" % (type, name, r))
        return r["result"]

    def bad(self, name, type, *mentions):
        before = self.repo.snapshot()
        r = self.d.create(name, type)
        err = self.assertErr(r, 1001, "NAME_INVALID")
        for m in mentions:
            self.assertIn(m, err["message"], "%r should mention %r" % (err["message"], m))
        self.assertUnchanged(before, self.repo)
        return err

    def test_container_limit(self):
        self.ok("abcdefghijk", "container")
        self.bad("abcdefghijkl", "container", "11", "ve-")

    def test_vm_limit(self):
        self.ok("abcdefghijkl", "vm")
        self.bad("abcdefghijklm", "vm", "12")

    def test_incus_limit(self):
        self.ok("a" * 53, "incus")
        self.bad("b" * 54, "incus", "53")

    def test_message_names_rule(self):
        err = self.bad("postgres-central", "container")
        self.assertEqual(err["message"],
                         'name "postgres-central" is 16 characters; container names are '
                         'limited to 11 (the host interface is ve-NAME, at most 15 bytes)')

    def test_underscore(self):
        for t in ("vm", "container", "incus"):
            self.bad("work_dev", t, "_", "-")

    def test_hyphen_ends(self):
        for t in ("vm", "container", "incus"):
            self.bad("-web", t, "start or end")
            self.bad("web-", t, "start or end")

    def test_other_characters(self):
        for t in ("vm", "container", "incus"):
            for n in ("web.dev", "Web", "wéb", ""):
                self.bad(n, t)

    def test_leading_digit_is_quoted(self):
        self.ok("1web", "vm")
        text = self.repo.read(self.repo.machine_rel).decode()
        self.assertIn('workspaces."1web" = {', text)
        shown = self.d.call("workspace.show", {"name": "1web"})
        self.assertEqual(shown["result"]["name"], "1web")

    def test_exists_any_type(self):
        self.ok("dup", "container")
        before = self.repo.snapshot()
        for t in ("vm", "container", "incus"):
            err = self.assertErr(self.d.create("dup", t), 1003, "EXISTS")
            self.assertEqual(err["data"]["name"], "dup")
        self.assertUnchanged(before, self.repo)


if __name__ == "__main__":
    main()
