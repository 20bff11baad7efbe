#!/usr/bin/env python3
"""Native gRPC scenarios with the real Python `grpcio` client, for ringway's tests.

Runs named scenarios against the methods of ringway's test backend (loadtest/src/backend.rs:
`/Unary`, `/ServerStream`, `/ClientStream`, `/BidiStream`, steered by `x-*` metadata), either
directly or through a proxy. Every call uses grpcio's generic handlers: bytes in, bytes out, no
generated code and no protobuf package (the one protobuf message checked, the
grpc-status-details-bin payload, is encoded by hand here, independently of the backend).

Output: one JSON object per line and scenario, in the order run:
    {"scenario": "unary", "ok": true, "detail": "...", "elapsed_ms": 3.1}
Exit status: 0 when every scenario passed, 1 when any failed, 2 for bad arguments, 3 when
grpcio cannot be imported (install it with scripts/test-deps.sh).

Usage:
    grpcio_client.py --target 127.0.0.1:9001 [SCENARIO ...]        # all scenarios if none named
    grpcio_client.py --target lb:443 --tls-ca ca.pem --authority api.test unary
    grpcio_client.py --list
"""

import argparse
import json
import queue
import sys
import time

SCENARIOS = {}


def scenario(function):
    """Registers a scenario under its function name; the order of definition is the run order."""
    SCENARIOS[function.__name__] = function
    return function


class Failure(Exception):
    pass


def check(condition, message):
    if not condition:
        raise Failure(message)


class Client:
    """One channel and the service path prefix; callables are made per method."""

    def __init__(self, grpc, channel, service, timeout_s):
        self.grpc = grpc
        self.channel = channel
        self.service = service
        self.timeout_s = timeout_s

    def path(self, method):
        return f"/{self.service}/{method}"

    def unary(self, method="Unary"):
        return self.channel.unary_unary(self.path(method))

    def server_stream(self, method="ServerStream"):
        return self.channel.unary_stream(self.path(method))

    def client_stream(self, method="ClientStream"):
        return self.channel.stream_unary(self.path(method))

    def bidi(self, method="BidiStream"):
        return self.channel.stream_stream(self.path(method))


def metadata_dict(pairs):
    return {key: value for key, value in (pairs or ())}


def frame_payload(n):
    """The backend's pattern message: byte i is i % 251."""
    return bytes(i % 251 for i in range(n))


# ---- protobuf, by hand: only what google.rpc.Status with one ErrorInfo detail needs ----

def varint(value):
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def length_delimited(field, payload):
    return varint(field << 3 | 2) + varint(len(payload)) + payload


def status_details(code, message, reason, domain="ringway.test"):
    error_info = length_delimited(1, reason.encode()) + length_delimited(2, domain.encode())
    any_detail = length_delimited(1, b"type.googleapis.com/google.rpc.ErrorInfo")
    any_detail += length_delimited(2, error_info)
    status = b""
    if code:
        status += varint(1 << 3) + varint(code)
    if message:
        status += length_delimited(2, message.encode())
    return status + length_delimited(3, any_detail)


# ---- scenarios ----

@scenario
def unary(c):
    response, call = c.unary().with_call(b"hello", timeout=c.timeout_s)
    check(response == b"hello", f"echo {response!r}")
    check(call.code() == c.grpc.StatusCode.OK, f"status {call.code()}")
    backend = metadata_dict(call.initial_metadata()).get("x-backend")
    check(backend, "no x-backend in the initial metadata")
    return f"echoed 5 bytes from {backend}"


@scenario
def large_messages(c):
    upload = frame_payload(1 << 20)
    response = c.unary()(upload, timeout=c.timeout_s)
    check(response == upload, f"1 MiB echo came back as {len(response)} bytes")
    response = c.unary()(b"x", metadata=[("x-response-bytes", str(3 << 20))], timeout=c.timeout_s)
    check(response == frame_payload(3 << 20), f"3 MiB reply came back as {len(response)} bytes")
    return "1 MiB up and back, 3 MiB down"


@scenario
def server_streaming(c):
    interval_ms = 300
    metadata = [("x-stream-count", "3"), ("x-stream-interval-ms", str(interval_ms))]
    responses = c.server_stream()(b"tick", metadata=metadata, timeout=c.timeout_s)
    arrivals = []
    for message in responses:
        arrivals.append(time.monotonic())
        check(message == b"tick", f"message {message!r}")
    check(len(arrivals) == 3, f"{len(arrivals)} messages, expected 3")
    check(responses.code() == c.grpc.StatusCode.OK, f"status {responses.code()}")
    # Incremental: each message arrives when produced, not all at the end. The backend waits
    # interval_ms between messages, so a stream buffered anywhere shows as near-zero gaps.
    gaps_ms = [round((b - a) * 1000) for a, b in zip(arrivals, arrivals[1:])]
    check(all(gap >= interval_ms / 2 for gap in gaps_ms), f"gaps {gaps_ms} ms: not incremental")
    return f"3 messages, gaps {gaps_ms} ms"


@scenario
def client_streaming(c):
    messages = [b"one", b"", b"three", frame_payload(100_000)]
    response, call = c.client_stream().with_call(iter(messages), timeout=c.timeout_s)
    check(response == b"".join(messages), f"concatenation of {len(response)} bytes")
    trailers = metadata_dict(call.trailing_metadata())
    check(trailers.get("x-request-messages") == "4", f"trailers {trailers}")
    check(trailers.get("x-request-bytes") == str(sum(map(len, messages))), f"trailers {trailers}")
    return "4 messages in, their concatenation out"


@scenario
def bidi_ping_pong(c):
    requests = queue.Queue()

    def outgoing():
        while True:
            item = requests.get()
            if item is None:
                return
            yield item

    metadata = [("x-trailer-echo-rounds", "5")]
    responses = c.bidi()(outgoing(), metadata=metadata, timeout=c.timeout_s)
    for round_number in range(5):
        message = f"ping {round_number}".encode() * (round_number + 1)
        requests.put(message)
        # The next ping is only sent once this echo is back: full duplex, nothing buffered
        # until the end of the request stream.
        echo = next(responses)
        check(echo == message, f"round {round_number}: echo {echo!r}")
    requests.put(None)
    rest = list(responses)
    check(rest == [], f"messages after the last round: {rest!r}")
    check(responses.code() == c.grpc.StatusCode.OK, f"status {responses.code()}")
    trailers = metadata_dict(responses.trailing_metadata())
    check(trailers.get("x-trailer-echo-rounds") == "5", f"trailers {trailers}")
    return "5 rounds"


@scenario
def metadata(c):
    blob = bytes([0, 1, 2, 0xFE, 0xFF])
    sent = [
        ("x-echo-user", "alice"),
        ("x-echo-blob-bin", blob),
        ("x-trailer-echo-count", "3"),
        ("x-trailer-echo-data-bin", blob[::-1]),
        ("x-not-echoed", "1"),
    ]
    _, call = c.unary().with_call(b"m", metadata=sent, timeout=c.timeout_s)
    headers = metadata_dict(call.initial_metadata())
    trailers = metadata_dict(call.trailing_metadata())
    check(headers.get("x-echo-user") == "alice", f"headers {headers}")
    check(headers.get("x-echo-blob-bin") == blob, f"binary header {headers.get('x-echo-blob-bin')!r}")
    check("x-not-echoed" not in headers, "x-not-echoed was echoed")
    check(trailers.get("x-trailer-echo-count") == "3", f"trailers {trailers}")
    check(trailers.get("x-trailer-echo-data-bin") == blob[::-1], f"binary trailer {trailers}")
    return "text and binary metadata both ways"


NON_ASCII_MESSAGE = "caf\u00e9 \u2603 \u2013 100% \U0001F680"


def error_metadata(code, message, *extra):
    return [
        ("x-grpc-status", str(code)),
        ("x-grpc-message-bin", message.encode("utf-8")),
        *extra,
    ]


@scenario
def error_status(c):
    results = []
    for trailers_only in (False, True):
        extra = [("x-trailers-only", "1")] if trailers_only else []
        sent = error_metadata(9, NON_ASCII_MESSAGE, *extra)
        try:
            c.unary()(b"e", metadata=sent, timeout=c.timeout_s)
            raise Failure("the call succeeded")
        except c.grpc.RpcError as error:
            check(error.code() == c.grpc.StatusCode.FAILED_PRECONDITION, f"code {error.code()}")
            check(error.details() == NON_ASCII_MESSAGE, f"details {error.details()!r}")
            results.append("trailers-only" if trailers_only else "after the message")
    return f"FAILED_PRECONDITION with a non-ASCII message, {' and '.join(results)}"


@scenario
def status_details_passthrough(c):
    sent = error_metadata(8, NON_ASCII_MESSAGE, ("x-status-details", "QUOTA_EXCEEDED"))
    try:
        c.unary()(b"d", metadata=sent, timeout=c.timeout_s)
        raise Failure("the call succeeded")
    except c.grpc.RpcError as error:
        check(error.code() == c.grpc.StatusCode.RESOURCE_EXHAUSTED, f"code {error.code()}")
        details = metadata_dict(error.trailing_metadata()).get("grpc-status-details-bin")
        expected = status_details(8, NON_ASCII_MESSAGE, "QUOTA_EXCEEDED")
        check(details == expected, f"details {details!r}, expected {expected!r}")
    return f"google.rpc.Status of {len(expected)} bytes intact"


@scenario
def unimplemented(c):
    try:
        c.unary("NoSuchMethod")(b"u", timeout=c.timeout_s)
        raise Failure("the call succeeded")
    except c.grpc.RpcError as error:
        check(error.code() == c.grpc.StatusCode.UNIMPLEMENTED, f"code {error.code()}")
    return "UNIMPLEMENTED"


@scenario
def deadline(c):
    started = time.monotonic()
    try:
        c.unary()(b"slow", metadata=[("x-delay-ms", "30000")], timeout=0.5)
        raise Failure("the call succeeded")
    except c.grpc.RpcError as error:
        check(error.code() == c.grpc.StatusCode.DEADLINE_EXCEEDED, f"code {error.code()}")
    waited = time.monotonic() - started
    check(waited < 20, f"DEADLINE_EXCEEDED after {waited:.1f} s, not at the 0.5 s deadline")
    return "DEADLINE_EXCEEDED"


@scenario
def cancellation(c):
    metadata = [("x-stream-count", "1000"), ("x-stream-interval-ms", "100")]
    responses = c.server_stream()(b"c", metadata=metadata, timeout=c.timeout_s)
    first = next(responses)
    check(first == b"c", f"first message {first!r}")
    responses.cancel()
    try:
        next(responses)
        raise Failure("the stream went on after cancel()")
    except c.grpc.RpcError as error:
        check(error.code() == c.grpc.StatusCode.CANCELLED, f"code {error.code()}")
    return "cancelled after the first message"


# ---- driver ----

def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", help="host:port of the backend or proxy")
    parser.add_argument("--tls-ca", metavar="FILE",
                        help="PEM CA bundle: use a secure channel that trusts only it")
    parser.add_argument("--authority", metavar="NAME",
                        help="authority and TLS server name (SNI, certificate check) to use "
                             "instead of the target's host")
    parser.add_argument("--service", default="ringway.test.Echo",
                        help="service part of every method path (default: %(default)s)")
    parser.add_argument("--timeout-s", type=float, default=10.0,
                        help="deadline of every call that does not test deadlines (default: %(default)s)")
    parser.add_argument("--list", action="store_true", help="print the scenario names and exit")
    parser.add_argument("scenarios", nargs="*", metavar="SCENARIO",
                        help="scenarios to run, in order (default: all)")
    args = parser.parse_args(argv)
    unknown = [name for name in args.scenarios if name not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario(s) {', '.join(unknown)}; known: {', '.join(SCENARIOS)}")
    if not args.list and not args.target:
        parser.error("--target is required")
    return args


def make_channel(grpc, args):
    options = [
        # Loopback tests must not go through an HTTP proxy from the environment, and a
        # transparent retry would hide what the server (or proxy) did.
        ("grpc.enable_http_proxy", 0),
        ("grpc.enable_retries", 0),
        ("grpc.max_receive_message_length", 16 << 20),
    ]
    if args.authority:
        options.append(("grpc.default_authority", args.authority))
    if args.tls_ca is None:
        return grpc.insecure_channel(args.target, options=options)
    with open(args.tls_ca, "rb") as file:
        credentials = grpc.ssl_channel_credentials(root_certificates=file.read())
    if args.authority:
        options.append(("grpc.ssl_target_name_override", args.authority))
    return grpc.secure_channel(args.target, credentials, options=options)


def main(argv):
    args = parse_args(argv)
    if args.list:
        print("\n".join(SCENARIOS))
        return 0
    try:
        import grpc
    except ImportError as error:
        print(f"grpcio is not installed for {sys.executable} ({error}); "
              f"run scripts/test-deps.sh", file=sys.stderr)
        return 3
    try:
        channel = make_channel(grpc, args)
    except OSError as error:
        print(f"cannot set up the channel: {error}", file=sys.stderr)
        return 2
    client = Client(grpc, channel, args.service, args.timeout_s)
    failed = 0
    for name in args.scenarios or list(SCENARIOS):
        started = time.monotonic()
        try:
            detail, ok = SCENARIOS[name](client), True
        except Failure as failure:
            detail, ok = str(failure), False
        except grpc.RpcError as error:
            detail, ok = f"unexpected {error.code()}: {error.details()!r}", False
        except Exception as error:  # a scenario bug or a client crash is a failure, not a hang
            detail, ok = f"{type(error).__name__}: {error}", False
        failed += not ok
        result = {
            "scenario": name,
            "ok": ok,
            "detail": detail,
            "elapsed_ms": round((time.monotonic() - started) * 1000, 1),
        }
        print(json.dumps(result), flush=True)
    channel.close()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
