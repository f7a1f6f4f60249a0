# SPDX-License-Identifier: MIT
"""Logging to the journal: with stderr connected to the journal (JOURNAL_STREAM), the daemon
sends structured entries (PRIORITY, MESSAGE, SYSLOG_IDENTIFIER, WORKSPACE=, REQUEST_ID=).
journald itself is replaced by a socket of the test's, in a private mount namespace."""
import json
import os
import shutil
import subprocess
import sys

from wslib import DaemonTest, WORKSPACED, fixture, main

PROBE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "journal_probe.py")


class Journal(DaemonTest):
    def test_structured_fields(self):
        if os.geteuid() != 0 or not shutil.which("unshare"):
            self.skipTest("needs root and unshare for a private mount namespace")
        repo = self.make_repo(fixture("03-dotted-top.nix"))
        out = os.path.join(repo.tmp, "journal.jsonl")
        p = subprocess.run(["unshare", "--mount", sys.executable, PROBE, WORKSPACED, repo.path,
                            repo.host, repo.run_dir, repo.state_dir, repo.sandbox, out],
                           capture_output=True, timeout=60)
        if p.returncode != 0 and b"Operation not permitted" in p.stderr:
            self.skipTest("mount namespaces are not permitted here")
        self.assertEqual(p.returncode, 0, p.stderr.decode())
        with open(out) as f:
            entries = [json.loads(l) for l in f]
        self.assertTrue(entries, "no journal entries; stderr was:\n" + p.stdout.decode())
        for e in entries:
            self.assertIn("MESSAGE", e)
            self.assertIn(e["PRIORITY"], [str(n) for n in range(8)])
            self.assertEqual(e["SYSLOG_IDENTIFIER"], "workspaced")
        created = [e for e in entries if "created workspace jdev" in e["MESSAGE"]]
        self.assertEqual(len(created), 1, entries)
        self.assertEqual(created[0]["WORKSPACE"], "jdev")
        self.assertEqual(created[0]["REQUEST_ID"], '"req-7"')
        self.assertEqual(created[0]["PRIORITY"], "6")
        # nothing went to stderr as plain text while the journal was there
        self.assertNotIn("created workspace", p.stdout.decode())


if __name__ == "__main__":
    main()
