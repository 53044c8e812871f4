"""Pose publishing latency: the ``lock`` and ``thread`` senders of ``ServicePublisher``, 1 or 50 subscribers.

For each case a subscriber process (its own GIL, like a robot) connects N SUB sockets; the publisher
sends poses at ``--rate`` Hz, each stamped with the wall time just before ``publish_pose`` is called.
Reported per case, over ``--poses`` poses:

* call µs: time spent inside ``publish_pose`` by the caller (the tracking thread's cost);
* latency ms: call start → the subscriber's first socket has the decoded message (same machine clock).

``--busy`` adds a thread spinning in pure Python during the run, as a stand-in for the mapping thread
holding the GIL: a sender thread must win the GIL back before it can send.

Usage (from the repository root)::

    .venv/bin/python -m bench.transport                  # lock/thread × 1/50 subscribers, idle and busy
    .venv/bin/python -m bench.transport --poses 500 --rate 200
"""

from __future__ import annotations

import argparse
import json
import select
import subprocess
import sys
import threading
import time

import numpy as np
import zmq

from slam.transport.client import PoseSubscriber
from slam.transport.publishers import PublisherConfig, ServicePublisher
from slam.transport.wire import TOPIC_POSE, TOPIC_STATUS, decode


def run_subscriber(address: str, sockets: int) -> None:
    """Subscriber process: N sockets, latency recorded on the first; prints JSON when told 'done'.

    Only the first socket decodes; the others drain raw bytes, so that this process's own CPU time
    (it shares the machine with the publisher) does not pass for publisher latency.
    """
    context = zmq.Context()
    measured = PoseSubscriber(address, context=context, rcvhwm=100_000)
    others = [context.socket(zmq.SUB) for _ in range(sockets - 1)]
    for sock in others:
        sock.setsockopt(zmq.SUBSCRIBE, TOPIC_POSE)
        sock.connect(address)
    control = context.socket(zmq.SUB)  # 'done' arrives as a status message
    control.setsockopt(zmq.SUBSCRIBE, TOPIC_STATUS)
    control.connect(address)
    poller = zmq.Poller()
    for sock in [measured.socket, *others, control]:
        poller.register(sock, zmq.POLLIN)
    ready: set[int] = set()
    latencies: list[float] = []
    done_at = None
    while done_at is None or time.monotonic() - done_at < 0.5:  # after 'done', drain for 0.5 s
        events = dict(poller.poll(100))
        if measured.socket in events and (message := measured.recv(0)) is not None:
            if message.frame_id == "warmup":
                ready.add(0)
            else:
                latencies.append(time.time() - message.stamp)
        for i, sock in enumerate(others, 1):
            if sock in events:
                if json.loads(sock.recv_multipart()[1])["frame_id"] == "warmup":
                    ready.add(i)
        if len(ready) == sockets:
            print("ready", flush=True)
            ready.add(-1)
        if control in events and decode(control.recv_multipart()).status.get("done"):
            done_at = time.monotonic()
    print(json.dumps({"latency_s": latencies, "missed": measured.missed}), flush=True)


def _wait_ready(pub: ServicePublisher, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        pub.publish_pose(stamp=time.time(), seq=0, frame_id="warmup", pose=np.eye(4), status="initialising")
        if select.select([proc.stdout], [], [], 0.02)[0] and proc.stdout.readline().strip() == "ready":
            return
    raise TimeoutError("subscriber process never connected")


def _spin(stop: threading.Event) -> None:
    x = 0
    while not stop.is_set():
        x += 1


def run_case(sender: str, sockets: int, poses: int, rate: float, busy: bool) -> dict[str, float]:
    pub = ServicePublisher(PublisherConfig(address="tcp://127.0.0.1:*", sender=sender, send_hwm=100_000))
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.transport", "--subscriber", pub.endpoint, str(sockets)],
        stdout=subprocess.PIPE,
        text=True,
    )
    stop = threading.Event()
    try:
        _wait_ready(pub, proc)
        spinner = threading.Thread(target=_spin, args=(stop,), daemon=True)
        if busy:
            spinner.start()
        pose = np.eye(4)
        call_s = []
        for seq in range(1, poses + 1):
            pose[:3, 3] = seq * 0.01
            t0 = time.time()
            pub.publish_pose(stamp=t0, seq=seq, frame_id="camera", pose=pose, status="ok")
            call_s.append(time.time() - t0)
            time.sleep(max(0.0, 1.0 / rate - (time.time() - t0)))
        time.sleep(0.2)
        pub.publish_status({"done": True})
        out = json.loads(proc.stdout.readline())
    finally:
        stop.set()
        proc.wait(30)
        pub.close()
    lat = np.array(out["latency_s"]) * 1e3
    calls = np.array(call_s) * 1e6
    return {
        "sender": sender,
        "subscribers": sockets,
        "busy": busy,
        "received": len(lat),
        "call_us_median": float(np.median(calls)),
        "call_us_p90": float(np.percentile(calls, 90)),
        "latency_ms_median": float(np.median(lat)),
        "latency_ms_p90": float(np.percentile(lat, 90)),
        "latency_ms_max": float(lat.max()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--poses", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=100.0, help="poses per second")
    parser.add_argument("--subscriber", nargs=2, metavar=("ADDRESS", "SOCKETS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.subscriber:
        run_subscriber(args.subscriber[0], int(args.subscriber[1]))
        return
    header = "sender  subs  busy   recv  call µs (med/p90)  latency ms (med/p90/max)"
    print(header)
    for busy in (False, True):
        for sockets in (1, 50):
            for sender in ("lock", "thread"):
                r = run_case(sender, sockets, args.poses, args.rate, busy)
                print(
                    f"{r['sender']:<7} {r['subscribers']:>4}  {str(r['busy']):<5} {r['received']:>5}  "
                    f"{r['call_us_median']:7.1f} / {r['call_us_p90']:7.1f}    "
                    f"{r['latency_ms_median']:6.3f} / {r['latency_ms_p90']:6.3f} / {r['latency_ms_max']:6.2f}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
