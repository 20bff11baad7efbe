#!/usr/bin/env python3
"""Hold many idle keep-alive connections to ringway and measure what they cost.

Opens N connections from source addresses spread over 127.0.0.0/8 (so ephemeral ports never run
out), sends one gRPC-Web unary call on each (so each is an idle keep-alive connection that has
served a request, the common case behind a browser fleet), then reads the proxy's resident
memory and times sequential calls on a sample of the open connections. Only calls answered with
grpc-status 0 count; anything else is reported and fails the run.

Usage: connections.py PROXY_HOST:PORT PROXY_PID N [SAMPLE]
Prints one JSON object: connections, rss_before_kib, rss_after_kib, kib_per_connection,
latency_us (median, p90, p99 over SAMPLE calls on idle connections), failed.
"""
import json
import random
import socket
import struct
import sys
import time

REQUEST_BODY = b"\x00" + struct.pack(">I", 5) + b"hello"
PATH = "/test.Echo/Unary"


def request(host):
    return (
        f"POST {PATH} HTTP/1.1\r\nhost: {host}\r\n"
        "content-type: application/grpc-web+proto\r\nx-grpc-web: 1\r\n"
        f"content-length: {len(REQUEST_BODY)}\r\n\r\n"
    ).encode() + REQUEST_BODY


def read_response(sock):
    """Read one chunked gRPC-Web response; return True when it carried grpc-status: 0."""
    data = b""
    while not data.endswith(b"0\r\n\r\n"):
        chunk = sock.recv(65536)
        if not chunk:
            return False
        data += chunk
    return b"grpc-status:0" in data.replace(b" ", b"")


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def source_address(i):
    # 127.1.0.1 upwards: 250 connections per address keeps well clear of port exhaustion.
    n = i // 250 + 1
    return f"127.1.{n // 250}.{n % 250 + 1}"


def main():
    target, pid, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    sample = int(sys.argv[4]) if len(sys.argv) > 4 else 1000
    host, port = target.rsplit(":", 1)
    port = int(port)
    payload = request(target)
    failed = 0

    warm = socket.create_connection((host, port))
    warm.sendall(payload)
    failed += not read_response(warm)
    time.sleep(1.0)
    before = rss_kib(pid)

    conns = []
    for i in range(count):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.bind((source_address(i), 0))
        s.connect((host, port))
        s.sendall(payload)
        failed += not read_response(s)
        conns.append(s)
    time.sleep(3.0)
    after = rss_kib(pid)

    latencies = []
    for s in random.sample(conns, min(sample, len(conns))):
        start = time.perf_counter()
        s.sendall(payload)
        ok = read_response(s)
        latencies.append((time.perf_counter() - start) * 1e6)
        failed += not ok
    latencies.sort()

    def pct(p):
        return round(latencies[min(len(latencies) - 1, int(p * len(latencies)))], 1)

    print(json.dumps({
        "connections": count,
        "rss_before_kib": before,
        "rss_after_kib": after,
        "kib_per_connection": round((after - before) / count, 2),
        "latency_us": {"median": pct(0.5), "p90": pct(0.9), "p99": pct(0.99)},
        "failed": failed,
    }))
    for s in conns:
        s.close()
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
