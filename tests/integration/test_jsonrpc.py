# SPDX-License-Identifier: MIT
"""Every row of cases/jsonrpc.md against the real daemon on a real socket."""
import json
import os
import threading
import time

from wslib import DaemonTest, Conn, fixture, main

MACHINE = fixture("03-dotted-top.nix")


class JsonRpc(DaemonTest):
    def setUp(self):
        super().setUp()
        self.repo, self.d = self.start(MACHINE)

    def test_daemon_info(self):
        c = self.d.conn()
        c.send_raw('{"jsonrpc":"2.0","id":1,"method":"daemon.info"}\n')
        r = c.recv()
        self.assertEqual(r["id"], 1)
        self.assertEqual(r["jsonrpc"], "2.0")
        res = r["result"]
        self.assertEqual(res["repo"], self.repo.path)
        self.assertEqual(res["machine"], "atlas")
        self.assertIn("version", res)
        self.assertEqual(res["protocol"], 1)
        self.assertEqual(res["workspaces"], 2)
        self.assertEqual(res["ranges"]["container"], ["192.168.83.50", "192.168.83.89"])

    def test_simple_line_same_as_general_path(self):
        """The exact line wsctl sends is read by a fast path; the same request spelled
        another way goes through json-c. Both answers must be the same bytes."""
        c = self.d.conn()
        pairs = [
            ('{"jsonrpc":"2.0","id":7,"method":"workspace.list"}',
             '{ "jsonrpc": "2.0", "id": 7, "method": "workspace.list" }'),
            ('{"jsonrpc":"2.0","id":123456789012345,"method":"daemon.info"}',
             '{"method":"daemon.info","jsonrpc":"2.0","id":123456789012345}'),
            ('{"jsonrpc":"2.0","id":0,"method":"workspace.show"}',
             '{"jsonrpc":"2.0","id":0,"method":"workspace.show","params":{}}'),
        ]
        for fast, general in pairs:
            for _ in range(3):  # daemon.info holds uptimeSeconds: same second wanted
                c.send_raw(fast + "\n")
                a = c.recv_line()
                c.send_raw(general + "\n")
                b = c.recv_line()
                if a == b:
                    break
            self.assertEqual(a, b, fast)
            self.assertEqual(json.loads(a)["id"], json.loads(fast)["id"])

    def test_near_simple_lines(self):
        """Lines one byte off the fast path's shape get the general path's answers."""
        c = self.d.conn()
        c.send_raw('{"jsonrpc":"2.0","id":01,"method":"daemon.info"}\n')
        self.assertEqual(c.recv()["error"]["code"], -32700)
        c.send_raw('{"jsonrpc":"2.0","id":1234567890123456789,"method":"daemon.info"}\n')
        r = c.recv()
        self.assertEqual(r["id"], 1234567890123456789)
        self.assertIn("result", r)
        c.send_raw('{"jsonrpc":"2.0","id":3,"method":"no.such"}\n')
        r = c.recv()
        self.assertEqual((r["id"], r["error"]["code"]), (3, -32601))
        c.send_raw('{"jsonrpc":"2.0","id":4,"method":"daemon.info"}}\n')
        self.assertEqual(c.recv()["error"]["code"], -32700)
        c.send_raw('{"jsonrpc":"2.0","id":5,"method":"daemon.info"}\r\n')
        self.assertEqual(c.recv()["id"], 5)
        # batch of simple-looking requests: one array back
        c.send_raw('[{"jsonrpc":"2.0","id":8,"method":"daemon.info"},'
                   '{"jsonrpc":"2.0","id":9,"method":"daemon.info"}]\n')
        r = c.recv()
        self.assertEqual(sorted(x["id"] for x in r), [8, 9])
        self.assertEqual(r[0]["result"]["protocol"], 1)

    def test_method_not_found(self):
        c = self.d.conn()
        c.send_raw('{"jsonrpc":"2.0","id":"a","method":"no.such"}\n')
        r = c.recv()
        self.assertEqual(r["id"], "a")
        self.assertEqual(r["error"]["code"], -32601)

    def test_notification_gets_nothing(self):
        c = self.d.conn()
        c.send_raw('{"jsonrpc":"2.0","method":"daemon.info"}\n')
        c.send_raw('{"jsonrpc":"2.0","id":7,"method":"daemon.info"}\n')
        r = c.recv()
        self.assertEqual(r["id"], 7, "the notification must not be answered")

    def test_missing_params(self):
        c = self.d.conn()
        c.send_raw('{"jsonrpc":"2.0","id":2,"method":"workspace.show"}\n')
        r = c.recv()
        self.assertEqual(r["id"], 2)
        self.assertEqual(r["error"]["code"], -32602)

    def test_type_invalid_writes_nothing(self):
        before = self.repo.snapshot()
        c = self.d.conn()
        c.send_raw('{"jsonrpc":"2.0","id":3,"method":"workspace.create",'
                   '"params":{"name":"x","type":"blob"}}\n')
        r = c.recv()
        self.assertEqual(r["id"], 3)
        self.assertEqual(r["error"]["code"], 1002)
        self.assertEqual(r["error"]["data"]["kind"], "TYPE_INVALID")
        self.assertUnchanged(before, self.repo)

    def test_empty_batch(self):
        c = self.d.conn()
        c.send_raw("[]\n")
        r = c.recv()
        self.assertIsInstance(r, dict, "one error object, not an array")
        self.assertEqual(r["error"]["code"], -32600)
        self.assertIsNone(r["id"])

    def test_batch(self):
        c = self.d.conn()
        c.send_raw(json.dumps([
            {"jsonrpc": "2.0", "id": 1, "method": "daemon.info"},
            {"jsonrpc": "2.0", "method": "daemon.info"},
            {"jsonrpc": "2.0", "id": 2, "method": "no.such"},
            {"foo": "bar"},
        ]) + "\n")
        r = c.recv()
        self.assertIsInstance(r, list)
        self.assertEqual(len(r), 3)
        by_id = {json.dumps(x.get("id")): x for x in r}
        self.assertIn("result", by_id["1"])
        self.assertEqual(by_id["2"]["error"]["code"], -32601)
        self.assertEqual(by_id["null"]["error"]["code"], -32600)

    def test_batch_of_notifications_gets_nothing(self):
        c = self.d.conn()
        c.send_raw('[{"jsonrpc":"2.0","method":"daemon.info"}]\n')
        c.send_raw('{"jsonrpc":"2.0","id":9,"method":"daemon.info"}\n')
        self.assertEqual(c.recv()["id"], 9)

    def test_parse_error_then_next_line(self):
        c = self.d.conn()
        c.send_raw('{"jsonrpc":"2.0","id":1,"method":"daemon.info"\n')
        r = c.recv()
        self.assertEqual(r["error"]["code"], -32700)
        self.assertIsNone(r["id"])
        c.send_raw('{"jsonrpc":"2.0","id":5,"method":"daemon.info"}\n')
        r = c.recv()
        self.assertEqual(r["id"], 5)
        self.assertIn("result", r)

    def test_invalid_requests(self):
        c = self.d.conn()
        for bad in ['{"id":1,"method":"daemon.info"}', '{"jsonrpc":"1.0","id":1,"method":"daemon.info"}',
                    '{"jsonrpc":"2.0","id":{},"method":"daemon.info"}', '{"jsonrpc":"2.0","id":1}',
                    '{"jsonrpc":"2.0","id":1,"method":3}', '42']:
            c.send_raw(bad + "\n")
            r = c.recv()
            self.assertEqual(r["error"]["code"], -32600, bad)
        c.send_raw('{"jsonrpc":"2.0","id":1,"method":"daemon.info","params":[1]}\n')
        self.assertEqual(c.recv()["error"]["code"], -32602)

    def test_slow_client_does_not_hold_up_others(self):
        slow = self.d.conn()
        msg = b'{"jsonrpc":"2.0","id":"slow","method":"daemon.info"}\n'
        done = []

        def trickle():
            for i in range(0, len(msg), 5):
                slow.send_raw(msg[i:i + 5])
                time.sleep(0.02)
            done.append(slow.recv())

        t = threading.Thread(target=trickle)
        t.start()
        fast = self.d.conn()
        answered = 0
        start = time.time()
        while t.is_alive() and answered < 200:
            r = fast.call("daemon.info", id=answered)
            self.assertIn("result", r)
            answered += 1
        t.join(10)
        self.assertEqual(done[0]["id"], "slow")
        self.assertIn("result", done[0])
        self.assertGreater(answered, 5, "the second client was held up")
        self.assertLess(time.time() - start, 10)

    def test_two_requests_in_one_write(self):
        c = self.d.conn()
        c.send_raw('{"jsonrpc":"2.0","id":1,"method":"daemon.info"}\n'
                   '{"jsonrpc":"2.0","id":2,"method":"workspace.list"}\n')
        ids = sorted([c.recv()["id"], c.recv()["id"]])
        self.assertEqual(ids, [1, 2])

    def test_oversize_line(self):
        c = self.d.conn()
        chunk = b"x" * 65536
        try:
            for _ in range(32):
                c.send_raw(chunk)
            c.send_raw(b"\n")
        except (BrokenPipeError, ConnectionResetError):
            pass
        r = c.recv(timeout=10)
        self.assertEqual(r["error"]["code"], -32600)
        self.assertIsNone(r["id"])
        self.assertTrue(c.closed(), "the connection must be closed after an oversize line")
        r = self.d.call("daemon.info")
        self.assertIn("result", r, "the daemon serves the next client")

    def test_disconnect_before_reply(self):
        pid = self.d.proc.pid
        fd_dir = "/proc/%d/fd" % pid
        self.d.call("daemon.info")
        before = len(os.listdir(fd_dir))
        for i in range(20):
            c = self.d.conn()
            c.send_raw('{"jsonrpc":"2.0","id":1,"method":"workspace.create",'
                       '"params":{"name":"gone%d","type":"vm","dryRun":true}}\n' % i)
            c.send_raw('{"jsonrpc":"2.0","id":2,"method":"workspace.list"}\n')
            c.close()
        time.sleep(0.5)
        r = self.d.call("daemon.info")
        self.assertIn("result", r)
        # (other parts, like a bus reconnect attempt, may hold a descriptor for a moment:
        # what counts is that the 20 connections left nothing behind)
        deadline = time.time() + 5
        while time.time() < deadline and len(os.listdir(fd_dir)) > before:
            time.sleep(0.05)
        self.assertLessEqual(len(os.listdir(fd_dir)), before)
        self.assertIsNone(self.d.proc.poll())

    def test_events_subscribe(self):
        sub = self.d.conn()
        r = sub.call("events.subscribe")
        self.assertEqual(r["result"], {"subscribed": True})
        r = self.d.create("ev1", "container")
        self.assertIn("result", r)
        ev = sub.recv(timeout=10)
        self.assertEqual(ev["method"], "event")
        self.assertNotIn("id", ev)
        self.assertEqual(ev["params"]["type"], "workspace.created")
        self.assertEqual(ev["params"]["name"], "ev1")


if __name__ == "__main__":
    main()
