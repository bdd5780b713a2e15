"""Python `websockets` against the Multistreamer emulator (`/ws/:id?token=`).

    python3 multistreamer_ws.py receive --url WS_URL --stream 21 --token T --out FILE
    python3 multistreamer_ws.py verify --got FILE --record RECORDING

`receive` talks to the server as the document describes: asks for a status, a view count and
a chat writer, sends an IRC message and an IRC private message (`/msg user ...`), and logs
every frame it gets. `verify` checks each answer's shape against the document and compares
every broadcast frame with the emulator's recording: the chat, emotes and writer results
between the first and the last one received arrive exactly once, in order, byte-for-byte
the recorded objects, and the sent messages are echoed as the document shows.
"""

import argparse
import asyncio
import json
import sys
import time
import uuid

from websockets.asyncio.client import connect

# How long `receive` waits at most, and how long it listens to traffic after its exchange.
DEADLINE_S = 20.0
LISTEN_S = 4.0
# Frames the server sends to everyone, in its one broadcast order.
BROADCAST = ("text", "emote", "writerresult")


class Checks:
    """Collects failed checks; `report` prints them and returns the exit code."""

    def __init__(self, name):
        self.name = name
        self.failures = []
        self.passed = 0

    def check(self, ok, what):
        """Records one check."""
        if ok:
            self.passed += 1
        else:
            self.failures.append(what)
        return ok

    def report(self):
        """Prints the outcome; 1 when any check failed."""
        if not self.failures:
            print(f"{self.name}: ok ({self.passed} checks)")
            return 0
        for f in self.failures[:20]:
            print(f"{self.name}: FAILED: {f}", file=sys.stderr)
        if len(self.failures) > 20:
            print(f"{self.name}: ... and {len(self.failures) - 20} more", file=sys.stderr)
        return 1


async def receive(args):
    """Runs the exchange and writes every frame sent and received, one JSON object a line."""
    nonce = uuid.uuid4().hex[:8]
    sent_text = f"outside check {nonce}"
    private_body = f"private outside check {nonce}"
    log = []
    start = time.monotonic()
    url = f"{args.url}/ws/{args.stream}?token={args.token}"

    async with connect(url, open_timeout=10) as ws:

        async def send(obj):
            log.append({"dir": "out", "frame": obj})
            await ws.send(json.dumps(obj))

        async def until(pred, what):
            """Reads frames until one satisfies `pred` (logging all); None at the deadline."""
            while True:
                left = DEADLINE_S - (time.monotonic() - start)
                if left <= 0:
                    log.append({"dir": "timeout", "waiting_for": what})
                    return None
                try:
                    raw = await asyncio.wait_for(ws.recv(), timeout=left)
                except TimeoutError:
                    continue
                frame = json.loads(raw)
                log.append({"dir": "in", "frame": frame})
                if pred(frame):
                    return frame

        await send({"type": "status"})
        status = await until(lambda f: f.get("type") == "status", "status")
        await send({"type": "viewcount"})
        await until(lambda f: f.get("type") == "viewcountresult", "viewcountresult")
        # Account 17 is writable but not ready in the document's example: ask for a writer.
        accounts = (status or {}).get("accounts", {})
        writer = next(
            (
                (int(a), int(b))
                for a, acc in accounts.items()
                if acc.get("writable") and not acc.get("ready")
                for b, live in accounts.items()
                if live.get("live") and live.get("ready")
            ),
            None,
        )
        if writer:
            await send({"type": "writer", "account_id": writer[0], "cur_stream_account_id": writer[1]})
            await until(
                lambda f: f.get("type") == "writerresult" and f.get("account_id") == writer[0],
                "writerresult",
            )
        await send({"type": "text", "account_id": 0, "cur_stream_account_id": 0, "text": sent_text})
        await until(lambda f: f.get("type") == "text" and f.get("text") == sent_text, "echo")
        await send(
            {
                "text": f"/msg somebody {private_body}",
                "account_id": 0,
                "cur_stream_account_id": 0,
                "type": "text",
            }
        )
        await until(lambda f: f.get("type") == "text" and f.get("text") == private_body, "private echo")
        # Then the traffic, for a while and until an emote came (the deadline bounds it).
        listen_until = time.monotonic() + LISTEN_S
        emotes = []

        def enough(frame):
            if frame.get("type") == "emote":
                emotes.append(frame)
            return bool(emotes) and time.monotonic() >= listen_until

        await until(enough, "an emote")

    meta = {"dir": "meta", "stream": int(args.stream), "sent_text": sent_text, "private_body": private_body}
    with open(args.out, "w", encoding="utf-8") as f:
        for entry in [meta, *log]:
            f.write(json.dumps(entry) + "\n")
    received = sum(1 for e in log if e["dir"] == "in")
    print(f"websockets: {received} frames in {time.monotonic() - start:.1f} s")
    return 0


def read_lines(path):
    """Reads one JSON value a line."""
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def check_status(checks, frame):
    """A status message as the document shows it."""
    status = frame.get("status", {})
    for key in ("data_pulling", "data_pushing", "data_incoming"):
        checks.check(isinstance(status.get(key), bool), f"status.{key} is not a boolean: {frame}")
    accounts = frame.get("accounts")
    if not checks.check(isinstance(accounts, dict) and accounts, f"status without accounts: {frame}"):
        return
    for aid, acc in accounts.items():
        checks.check(aid.isdigit(), f"account key {aid!r} is not an id")
        for key in ("live", "writable", "ready"):
            checks.check(isinstance(acc.get(key), bool), f"account {aid}: {key} is not a boolean")
        checks.check(isinstance(acc.get("name"), str), f"account {aid}: no name")
        net = acc.get("network", {})
        checks.check(
            isinstance(net.get("name"), str) and isinstance(net.get("displayName"), str),
            f"account {aid}: network {net}",
        )


def verify(args):
    """Compares the logged exchange with the document and the emulator's recording."""
    checks = Checks("websockets (Multistreamer)")
    log = read_lines(args.got)
    record = read_lines(args.record)
    meta = log[0]
    timeouts = [e["waiting_for"] for e in log if e["dir"] == "timeout"]
    checks.check(not timeouts, f"no answer in {DEADLINE_S} s while waiting for {', '.join(timeouts)}")
    frames = [e["frame"] for e in log if e["dir"] == "in"]

    statuses = [f for f in frames if f.get("type") == "status"]
    if checks.check(statuses, "no status message"):
        for s in statuses:
            check_status(checks, s)
    live = {int(a) for a, acc in statuses[0].get("accounts", {}).items() if acc.get("live")} if statuses else set()
    counts = [f for f in frames if f.get("type") == "viewcountresult"]
    checks.check(counts, "no viewcountresult")
    for c in counts:
        checks.check(isinstance(c.get("viewer_count"), int), f"viewer_count is not a number: {c}")
        checks.check(c.get("stream_id") == meta["stream"], f"viewcountresult for stream {c.get('stream_id')}: {c}")
        checks.check(c.get("account_id") in live, f"viewcountresult for an account not live: {c}")

    asked = [e["frame"] for e in log if e["dir"] == "out" and e["frame"]["type"] == "writer"]
    results = [f for f in frames if f.get("type") == "writerresult"]
    checks.check(asked, "the first status offered no writable, not-ready account to ask a writer for")
    for w in asked:
        checks.check(
            any(r.get("account_id") == w["account_id"] and r.get("cur_stream_account_id") == w["cur_stream_account_id"] for r in results),
            f"no writerresult for {w}",
        )
        checks.check(
            any(s.get("accounts", {}).get(str(w["account_id"]), {}).get("ready") for s in statuses),
            f"account {w['account_id']} never became ready after its writer result",
        )

    echo = [f for f in frames if f.get("type") == "text" and f.get("text") == meta["sent_text"]]
    if checks.check(len(echo) == 1, f"the sent IRC message was echoed {len(echo)} times"):
        e = echo[0]
        checks.check(e.get("account_id") == 0 and e.get("network") == "irc", f"echo not from IRC account 0: {e}")
        checks.check(isinstance(e.get("from", {}).get("name"), str), f"echo without from.name: {e}")
        checks.check("to" not in e, f"a public message echoed with `to`: {e}")
    private = [f for f in frames if f.get("type") == "text" and f.get("text") == meta["private_body"]]
    if checks.check(len(private) == 1, f"the /msg private message was echoed {len(private)} times"):
        checks.check(private[0].get("to", {}).get("name") == "somebody", f"private echo without to.name: {private[0]}")

    got = [f for f in frames if f.get("type") in BROADCAST]
    kinds = {f["type"] for f in got}
    checks.check({"text", "emote", "writerresult"} <= kinds, f"received only {sorted(kinds)} broadcasts")
    recorded = [r for r in record if r["type"] in BROADCAST]
    index = {}
    for i, r in enumerate(recorded):
        index.setdefault(json.dumps(r["json"], sort_keys=True), []).append(i)
    seen = []
    for f in got:
        where = index.get(json.dumps(f, sort_keys=True))
        if checks.check(where, f"a frame that is not in the emulator's recording: {f}"):
            seen.append(where[0])
    checks.check(len(set(seen)) == len(seen), "a broadcast frame arrived more than once")
    checks.check(seen == sorted(seen), "broadcast frames arrived out of the server's order")
    if seen:
        missing = sorted(set(range(seen[0], seen[-1] + 1)) - set(seen))
        checks.check(
            not missing,
            f"{len(missing)} recorded broadcasts between the first and last received never arrived, "
            f"e.g. {[recorded[i]['json'] for i in missing[:2]]}",
        )
    checks.check(len(seen) >= 10, f"only {len(seen)} broadcast frames received")
    # Status changes are broadcast too (the asker's own status answers are not recorded).
    status_record = [json.dumps(r["json"], sort_keys=True) for r in record if r["type"] == "status"]
    status_got = {json.dumps(s, sort_keys=True) for s in statuses[1:]}
    for s in status_got:
        checks.check(
            s in status_record or s == json.dumps(statuses[0], sort_keys=True),
            f"a status change that is not in the recording: {s}",
        )
    code = checks.report()
    if code == 0:
        print(f"websockets: {len(seen)} broadcasts exactly once; sent text and /msg echoed")
    return code


def main():
    """Command line."""
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("receive")
    r.add_argument("--url", required=True)
    r.add_argument("--stream", required=True)
    r.add_argument("--token", required=True)
    r.add_argument("--out", required=True)
    v = sub.add_parser("verify")
    v.add_argument("--got", required=True)
    v.add_argument("--record", required=True)
    args = p.parse_args()
    if args.command == "receive":
        return asyncio.run(receive(args))
    return verify(args)


if __name__ == "__main__":
    sys.exit(main())
