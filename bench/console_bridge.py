"""The VNC console bridge against a direct TCP connection to the same VNC server, in one run.

    .venv/bin/python bench/console_bridge.py [--requests 300] [--frames 30] [--clicks 3]

A guest is started under libvirt (bench-…), then the same RFB conversation is
held twice with its VNC server: directly over TCP (authenticating with the VNC
password), and through the bridge over a WebSocket (one-time ticket, Origin,
session cookie; the bridge authenticates). Printed: the round trip of a 1x1
framebuffer update (added latency), full-frame raw updates per second and MB/s
(throughput), and, in Chromium, the time from clicking "Console" to the first
frame on the canvas.
"""

import argparse
import base64
import logging
import multiprocessing
import os
import socket
import statistics
import struct
import threading
import time

import _setup
from _setup import BENCH_PASSWORD, BIN, cleanup, free_port, prepare, start_process, start_vm, stop_process
from django.test import Client
from websockify.websocketproxy import WebSocketProxy

import hypervisor
from vms.consoles import rfb, tokens
from vms.consoles.bridge import ConsoleProxyHandler
from vms.models import VirtualMachine

ORIGIN = "http://127.0.0.1"


class TcpChannel:
    def __init__(self, sock: socket.socket):
        self.sock = sock

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def recv(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("closed")
            data += chunk
        return data


class WebSocketChannel(TcpChannel):
    """A minimal WebSocket client (binary frames, masked as clients must)."""

    def __init__(self, url: str, cookie: str):
        host_port, _, query = url.removeprefix("ws://").partition("/")
        host, port = host_port.split(":")
        super().__init__(socket.create_connection((host, int(port))))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            (
                f"GET /{query} HTTP/1.1\r\nHost: {host_port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Protocol: binary\r\n"
                f"Origin: {ORIGIN}\r\nCookie: {cookie}\r\n\r\n"
            ).encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            head += self.sock.recv(1)
        assert head.startswith(b"HTTP/1.1 101"), head[:200]
        self.buffer = b""

    def send(self, data: bytes) -> None:
        mask = os.urandom(4)
        length = len(data)
        if length < 126:
            header = struct.pack("!BB", 0x82, 0x80 | length)
        elif length < 65536:
            header = struct.pack("!BBH", 0x82, 0x80 | 126, length)
        else:
            header = struct.pack("!BBQ", 0x82, 0x80 | 127, length)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
        self.sock.sendall(header + mask + masked)

    def recv(self, n: int) -> bytes:
        while len(self.buffer) < n:
            self.buffer += self._frame()
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    def _frame(self) -> bytes:
        first, second = TcpChannel.recv(self, 2)
        length = second & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", TcpChannel.recv(self, 2))
        elif length == 127:
            (length,) = struct.unpack("!Q", TcpChannel.recv(self, 8))
        payload = TcpChannel.recv(self, length)
        return payload if first & 0x0F in (0x0, 0x2) else b""


def rfb_session(channel: TcpChannel, password: str | None) -> tuple[int, int, int]:
    """Handshake to the end of ServerInit; (width, height, bytes per pixel)."""
    if password is not None:
        rfb.authenticate_to_server(channel.recv, channel.send, password)
    else:  # through the bridge: it offers only "None"
        channel.recv(12)
        channel.send(rfb.VERSION)
        count = channel.recv(1)[0]
        channel.recv(count)
        channel.send(bytes([rfb.SECURITY_NONE]))
        assert channel.recv(4) == bytes(4)
    channel.send(b"\x01")  # ClientInit: shared
    width, height = struct.unpack("!HH", channel.recv(4))
    pixel_format = channel.recv(16)
    (name_length,) = struct.unpack("!I", channel.recv(4))
    channel.recv(name_length)
    channel.send(struct.pack("!BxHi", 2, 1, 0))  # SetEncodings: raw only
    return width, height, pixel_format[0] // 8


def update(channel: TcpChannel, width: int, height: int, bpp: int) -> int:
    """One non-incremental FramebufferUpdate of (0, 0, width, height); the bytes received."""
    channel.send(struct.pack("!BBHHHH", 3, 0, 0, 0, width, height))
    total = 0
    while True:
        kind = channel.recv(1)[0]
        if kind == 0:
            break
        if kind == 2:  # Bell
            continue
        if kind == 3:  # ServerCutText
            channel.recv(3)
            (length,) = struct.unpack("!I", channel.recv(4))
            channel.recv(length)
    channel.recv(1)
    (rects,) = struct.unpack("!H", channel.recv(2))
    for _ in range(rects):
        _x, _y, w, h, encoding = struct.unpack("!HHHHi", channel.recv(12))
        if encoding == 0:
            channel.recv(w * h * bpp)
            total += w * h * bpp
        # pseudo-encodings carry no pixel data here
    return total


def measure_pair(direct: TcpChannel, password: str, bridged: TcpChannel, requests: int, frames: int):
    """The same requests on both connections, interleaved, so the guest's activity affects both alike."""
    channels = {"direct": direct, "bridged": bridged}
    geometry = {
        "direct": rfb_session(direct, password),
        "bridged": rfb_session(bridged, None),
    }
    round_trips = {name: [] for name in channels}
    for name, channel in channels.items():
        update(channel, *geometry[name])  # warm up
    for _ in range(requests):
        for name, channel in channels.items():
            started = time.perf_counter()
            update(channel, 1, 1, geometry[name][2])
            round_trips[name].append(time.perf_counter() - started)
    received = dict.fromkeys(channels, 0)
    elapsed = dict.fromkeys(channels, 0.0)
    for _ in range(frames):
        for name, channel in channels.items():
            started = time.perf_counter()
            received[name] += update(channel, *geometry[name])
            elapsed[name] += time.perf_counter() - started
    results = {}
    for name in channels:
        width, height, bpp = geometry[name]
        times = sorted(round_trips[name])
        results[name] = {
            "size": f"{width}x{height}x{bpp * 8}",
            "rtt_ms": 1000 * statistics.median(times),
            "rtt_p95_ms": 1000 * times[int(0.95 * len(times))],
            "fps": frames / elapsed[name],
            "mb_s": received[name] / elapsed[name] / 1e6,
        }
    return results["direct"], results["bridged"]


class StandInVNCServer(threading.Thread):
    """A VNC server that answers every update request at once, from memory.

    QEMU sends updates on its own refresh timer (tens to hundreds of ms), which
    hides what the bridge itself adds; against this server only transport counts.
    """

    def __init__(self, width=1024, height=768):
        super().__init__(daemon=True)
        self.width, self.height = width, height
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.pixels = os.urandom(width * height * 4)

    def run(self):
        while True:
            conn, _ = self.listener.accept()
            threading.Thread(target=self.serve, args=(conn,), daemon=True).start()

    def serve(self, conn: socket.socket):
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        channel = TcpChannel(conn)
        try:
            channel.send(rfb.VERSION)
            channel.recv(12)
            channel.send(bytes([1, rfb.SECURITY_VNC_AUTH]) + bytes(16))
            channel.recv(17)  # chosen type + response: any password will do here
            channel.send(struct.pack("!I", 0))
            channel.recv(1)
            pixel_format = struct.pack("!BBBBHHHBBBxxx", 32, 24, 0, 1, 255, 255, 255, 16, 8, 0)
            channel.send(
                struct.pack("!HH", self.width, self.height) + pixel_format + struct.pack("!I", 5) + b"stand"
            )
            while True:
                kind = channel.recv(1)[0]
                if kind == 2:  # SetEncodings
                    _pad, count = struct.unpack("!BH", channel.recv(3))
                    channel.recv(4 * count)
                elif kind == 3:  # FramebufferUpdateRequest
                    _incremental, x, y, w, h = struct.unpack("!BHHHH", channel.recv(9))
                    header = struct.pack("!BxHHHHHi", 0, 1, x, y, w, h, 0)
                    channel.send(header + self.pixels[: w * h * 4])
                else:
                    return
        except (ConnectionError, OSError):
            return
        finally:
            conn.close()


def stand_in_bridge(server_port: int) -> tuple[multiprocessing.Process, int]:
    """The bridge's own handler (RFB security proxy, frame relay) pointed at the stand-in server."""

    class Handler(ConsoleProxyHandler):
        def validate_connection(self):
            self.target = ("127.0.0.1", server_port, "standin1")

    port = free_port()

    def serve():
        logging.getLogger().setLevel(logging.CRITICAL)
        WebSocketProxy(
            RequestHandlerClass=Handler,
            listen_host="127.0.0.1",
            listen_port=port,
            target_host="x",
            target_port=0,
        ).start_server()

    process = multiprocessing.Process(target=serve)  # websockify forks its own handlers
    process.start()
    for _ in range(100):
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.05)
    return process, port


def compare(label: str, direct: dict, bridged: dict, requests: int, frames: int) -> None:
    print(f"\n{label}: screen {direct['size']}, {requests} round trips, {frames} full frames (raw)")
    print(f"{'':<34}{'direct TCP':>12}{'bridge (ws)':>14}")
    for key, name in [("rtt_ms", "1x1 update round trip, median ms"), ("rtt_p95_ms", "  p95 ms"),
                      ("fps", "full frames per second"), ("mb_s", "throughput MB/s")]:  # fmt: skip
        print(f"{name:<34}{direct[key]:>12.2f}{bridged[key]:>14.2f}")
    print(f"added latency (median): {bridged['rtt_ms'] - direct['rtt_ms']:.2f} ms")


def click_to_first_frame(vm, panel_url: str, clicks: int) -> list[float]:
    from playwright.sync_api import sync_playwright

    args = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-sync",
            "--disable-background-networking", "--disable-component-update",
            "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE localhost , EXCLUDE 127.0.0.1"]  # fmt: skip
    timings = []
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(_setup.VAR / f"bench-chromium-{_setup.TAG}"),
            executable_path="/usr/bin/chromium",
            headless=True,
            args=args,
        )
        page = context.new_page()
        page.goto(f"{panel_url}/accounts/login/")
        page.fill("#id_username", "bench")
        page.fill("#id_password", BENCH_PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url(f"{panel_url}/vms/")
        for _ in range(clicks):
            page.goto(f"{panel_url}/vms/{vm.uuid}/")
            started = time.perf_counter()
            page.get_by_role("link", name="Console").click()
            try:
                wait_for_first_frame(page)
            except Exception:
                page.screenshot(path=str(_setup.VAR / "bench-console-failed.png"))
                raise
            timings.append(time.perf_counter() - started)
        context.close()
    return timings


def wait_for_first_frame(page):
    page.wait_for_function(
        """() => { const c = document.querySelector('#screen canvas');
                if (!c || !c.width) return false;
                const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                for (let i = 4; i < d.length; i += 124) if (d[i] !== d[0] || d[i+1] !== d[1]) return true;
                return false; }""",
        timeout=30_000,
        polling=10,
    )


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--clicks", type=int, default=3)
    args = parser.parse_args()
    bridge = web = None
    try:
        plan, image, user, node = prepare()
        vm = VirtualMachine.objects.create(
            owner=user, node=node, plan=plan, image=image, hostname="bench-console", state="running"
        )
        start_vm(vm)
        with hypervisor.connect(node.uri) as session:
            vnc_port = session.vnc_port(vm.domain_name)
        bridge_port = free_port()
        env = {**os.environ, "KVMPANEL_CONSOLE_PORT": str(bridge_port)}
        bridge = start_process(
            "bridge", [str(BIN / "python"), "manage.py", "console_bridge"], "bridge on", env
        )
        time.sleep(3)  # let the guest draw something
        client = Client()
        client.force_login(user)
        cookie = f"sessionid={client.cookies['sessionid'].value}"

        url = f"ws://127.0.0.1:{bridge_port}/?token={tokens.issue(user, vm)}"
        direct, bridged = measure_pair(
            TcpChannel(socket.create_connection(("127.0.0.1", vnc_port))), vm.vnc_password,
            WebSocketChannel(url, cookie), args.requests, args.frames,
        )  # fmt: skip

        compare("QEMU's VNC server (the guest)", direct, bridged, args.requests, args.frames)

        stand_in = StandInVNCServer()
        stand_in.start()
        proxy, proxy_port = stand_in_bridge(stand_in.port)
        try:
            direct, bridged = measure_pair(
                TcpChannel(socket.create_connection(("127.0.0.1", stand_in.port))), "x",
                WebSocketChannel(f"ws://127.0.0.1:{proxy_port}/?token=-", cookie), args.requests, args.frames,
            )  # fmt: skip
        finally:
            proxy.kill()  # websockify prints a traceback on SIGTERM
        compare("stand-in server that answers at once (the bridge's own cost)", direct, bridged,
                args.requests, args.frames)  # fmt: skip

        if args.clicks:
            port = free_port()
            web = start_process(
                "daphne",
                [str(BIN / "daphne"), "-b", "127.0.0.1", "-p", str(port), "kvmpanel.asgi:application"],
                "Listening on",
                {**env, "LOG_LEVEL": "INFO"},  # daphne says it listens at INFO
            )
            timings = click_to_first_frame(vm, f"http://127.0.0.1:{port}", args.clicks)
            shown = ", ".join(f"{t:.2f}" for t in timings)
            print(f"click Console -> first frame: median {statistics.median(timings):.2f} s ({shown})")
    finally:
        stop_process(bridge)
        stop_process(web)
        cleanup()


if __name__ == "__main__":
    main()
