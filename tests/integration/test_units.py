# SPDX-License-Identifier: MIT
"""Unit state end to end: the real daemon on a private system bus (a private dbus-daemon
selected through DBUS_SYSTEM_BUS_ADDRESS) where tests/dbus/fake-systemd1 plays systemd:
workspace.list and wsctl list show ActiveState/SubState, changes become unit.changed
events, and without a bus the state is unknown."""
import os
import shutil
import subprocess
import tempfile
import time

from wslib import DaemonTest, fixture, have, main

FAKE = os.path.join(os.environ.get("WS_BUILD_DIR", "build"), "tests", "dbus", "fake-systemd1")

BUS_CONF = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path=%s</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"""


class Units(DaemonTest):
    def setUp(self):
        super().setUp()
        if not have("dbus-daemon") or not os.path.exists(FAKE):
            self.skipTest("dbus-daemon or fake-systemd1 is missing")
        self.dir = tempfile.mkdtemp(prefix="ws-bus-")
        self.sock = os.path.join(self.dir, "bus")
        conf = os.path.join(self.dir, "bus.conf")
        with open(conf, "w") as f:
            f.write(BUS_CONF % self.sock)
        self.bus = subprocess.Popen(["dbus-daemon", "--nofork", "--nopidfile",
                                     "--config-file=" + conf, "--print-address=1"],
                                    stdout=subprocess.PIPE)
        self.bus.stdout.readline()
        self.bus.stdout.close()
        self.addr = "unix:path=" + self.sock
        env = dict(os.environ, DBUS_SYSTEM_BUS_ADDRESS=self.addr)
        self.fake = subprocess.Popen([FAKE, "container@docs.service=active/running"],
                                     stdout=subprocess.PIPE, env=env)
        self.assertEqual(self.fake.stdout.readline().strip(), b"ready")
        self.fake.stdout.close()

    def tearDown(self):
        super().tearDown()
        for p in (getattr(self, "fake", None), getattr(self, "bus", None)):
            if p and p.poll() is None:
                p.terminate()
                p.wait(5)
        shutil.rmtree(getattr(self, "dir", "/nonexistent"), ignore_errors=True)

    def set_state(self, unit, active, sub):
        subprocess.run(["dbus-send", "--bus=" + self.addr, "--print-reply",
                        "--dest=org.freedesktop.systemd1", "/org/freedesktop/systemd1",
                        "org.workspaced.FakeSystemd1.SetUnitState", "string:" + unit,
                        "string:" + active, "string:" + sub], check=True,
                       capture_output=True)

    def states(self, d):
        lst = d.call("workspace.list")["result"]["workspaces"]
        return {w["name"]: (w["state"]["active"], w["state"]["sub"]) for w in lst}

    def wait_states(self, d, want, timeout=5):
        end = time.time() + timeout
        while time.time() < end:
            got = self.states(d)
            if all(got.get(k) == v for k, v in want.items()):
                return got
            time.sleep(0.05)
        self.fail("states %r, wanted %r" % (self.states(d), want))

    def test_states_and_changes(self):
        repo, d = self.start(fixture("03-dotted-top.nix"),
                             env={"DBUS_SYSTEM_BUS_ADDRESS": self.addr})
        self.wait_states(d, {"docs": ("active", "running"), "api": ("inactive", "dead")})
        sub = d.conn()
        self.assertIn("result", sub.call("events.subscribe"))
        self.set_state("container@api.service", "activating", "start")
        ev = sub.recv(timeout=5)["params"]
        self.assertEqual(ev["type"], "unit.changed")
        self.assertEqual(ev["name"], "api")
        self.assertEqual(ev["unit"], "container@api.service")
        self.assertEqual((ev["active"], ev["sub"]), ("activating", "start"))
        self.wait_states(d, {"api": ("activating", "start")})
        lines = d.wsctl("list").stdout.decode().splitlines()
        docs = [l for l in lines if l.startswith("docs ")][0]
        api = [l for l in lines if l.startswith("api ")][0]
        self.assertIn("active/running", docs)
        self.assertIn("activating/start", api)
        shown = d.call("workspace.show", {"name": "docs"})["result"]
        self.assertEqual(shown["state"], {"active": "active", "sub": "running"})

    def test_created_workspaces_followed(self):
        # creates in a row add their units one by one to the followed set
        repo, d = self.start(fixture("03-dotted-top.nix"),
                             env={"DBUS_SYSTEM_BUS_ADDRESS": self.addr})
        self.wait_states(d, {"docs": ("active", "running"), "api": ("inactive", "dead")})
        for name in ("web", "db"):
            self.assertIn("result", d.create(name, "container"))
        self.assertIn("result", d.create("gpu", "vm"))
        self.wait_states(d, {"web": ("inactive", "dead"), "db": ("inactive", "dead"),
                             "gpu": ("inactive", "dead"), "docs": ("active", "running")})
        self.set_state("container@db.service", "active", "running")
        self.set_state("microvm@gpu.service", "activating", "start")
        self.wait_states(d, {"db": ("active", "running"), "gpu": ("activating", "start"),
                             "web": ("inactive", "dead")})

    def test_no_bus_is_unknown(self):
        repo, d = self.start(fixture("03-dotted-top.nix"),
                             env={"DBUS_SYSTEM_BUS_ADDRESS": "unix:path=/nonexistent/bus"})
        got = self.states(d)
        self.assertEqual(got, {"docs": ("unknown", "unknown"), "api": ("unknown", "unknown")})
        self.assertIn("result", d.create("web", "container"))


if __name__ == "__main__":
    main()
