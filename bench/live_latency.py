"""How fast a change made outside the panel shows: libvirt's event, the VM row, an open page.

    .venv/bin/python bench/live_latency.py [--runs 5]

A VM (bench-…) is defined and started directly through the hypervisor door;
the panel's web server (daphne) and its node monitor (`manage.py node_monitor`)
run as their own processes, and Chromium has the VM's page open with its
`/ws/live/` websocket connected. Then the domain is stopped and started behind
the panel's back with plain libvirt `destroy()` / `create()` (what `virsh
destroy` / `virsh start` do), alternately, `--runs` times each, after one
unmeasured warm-up cycle. For each transition three observers are timed from
`time.time()` read just before the libvirt call:

(a) a plain libvirt lifecycle-event listener in this process, on a read-only
    connection of its own (the floor: libvirt itself); its callback reads the
    clock first;
(b) the VM row in the database: a thread of this process reads the row every
    2 ms and stamps the first read showing the new state (written there by
    the node monitor; resolution about 2 ms);
(c) the open VM page: a MutationObserver installed in the page stamps
    `performance.timeOrigin + performance.now()` when `#vm-state` first carries
    the new `data-state` (the page is told over the websocket and swaps in its
    re-fetched partial; painting follows at the next frame). The stamps are
    read back after the fact, so Playwright's own round trips are not in the
    number. Both clocks are this machine's wall clock; that the page's clock
    agrees with `time.time()` is checked before and after the runs by reading
    it between two `time.time()` calls, 20 times (printed: how many reads fell
    inside their bracket, and the offset from the middle of the tightest one).

The time `destroy()` / `create()` took to return is shown alongside. Between
repetitions the bench waits until all three observers have seen the change,
plus 1 s. Everything in libvirt is named bench-… and removed at the end.
"""

import argparse
import os
import statistics
import threading
import time

import _setup
import libvirt
from _setup import (
    BENCH_PASSWORD,
    BIN,
    URI,
    cleanup,
    free_port,
    prepare,
    start_process,
    start_vm,
    stop_process,
)
from django.db import connection

from vms.models import VirtualMachine

WAIT_SECONDS = 30.0
OBSERVERS = ["call", "event", "row", "page"]
HEADINGS = {
    "call": "call returned",
    "event": "(a) libvirt event",
    "row": "(b) database row",
    "page": "(c) page",
}
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-sync",
    "--disable-background-networking",
    "--disable-component-update",
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE localhost , EXCLUDE 127.0.0.1",
]
# Stamps every change of #vm-state's data-state inside the live block (the partial is swapped in whole).
INSTALL_OBSERVER = """() => {
  window.__states = [];
  const block = document.getElementById("vm-live");
  let last = block.querySelector("#vm-state")?.dataset.state;
  new MutationObserver(() => {
    const t = performance.timeOrigin + performance.now();
    const state = block.querySelector("#vm-state")?.dataset.state;
    if (state && state !== last) {
      last = state;
      window.__states.push({ state, t });
    }
  }).observe(block, { subtree: true, childList: true, attributes: true, attributeFilter: ["data-state"] });
  return last;
}"""
PAGE_SAW = "([state, since]) => window.__states.find((e) => e.state === state && e.t >= since) || null"


def start_libvirt_event_loop() -> None:
    """libvirt's default event loop in a thread; connections opened after this deliver events."""
    libvirt.virEventRegisterDefaultImpl()

    def run():
        while True:
            libvirt.virEventRunDefaultImpl()

    threading.Thread(target=run, name="bench-libvirt-events", daemon=True).start()


class EventListener:
    """(a): lifecycle events of one domain on a read-only connection of its own."""

    STATES = {
        libvirt.VIR_DOMAIN_EVENT_STOPPED: "stopped",
        libvirt.VIR_DOMAIN_EVENT_STARTED: "running",
        libvirt.VIR_DOMAIN_EVENT_RESUMED: "running",
    }

    def __init__(self, domain_name: str):
        self.seen: list[tuple[str, float]] = []
        self.conn = libvirt.openReadOnly(URI)
        domain = self.conn.lookupByName(domain_name)
        self.callback = self.conn.domainEventRegisterAny(
            domain, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._lifecycle, None
        )

    def _lifecycle(self, _conn, _domain, event, _detail, _opaque):
        now = time.time()
        if event in self.STATES:
            self.seen.append((self.STATES[event], now))

    def first(self, state: str, since: float) -> float | None:
        return next((t for s, t in list(self.seen) if s == state and t >= since), None)

    def close(self) -> None:
        try:
            self.conn.domainEventDeregisterAny(self.callback)
        finally:
            self.conn.close()


class RowPoller(threading.Thread):
    """(b): the VM row's state, read every 2 ms; the first read that shows each change is stamped."""

    def __init__(self, vm_pk: int):
        super().__init__(name="bench-row-poller", daemon=True)
        self.vm_pk = vm_pk
        self.seen: list[tuple[str, float]] = []
        self.stopping = threading.Event()
        self.error: BaseException | None = None

    def run(self):
        last = None
        rows = VirtualMachine.objects.filter(pk=self.vm_pk).values_list("state", flat=True)
        try:
            while not self.stopping.is_set():
                state = rows.first()
                now = time.time()
                if state != last:
                    self.seen.append((state, now))
                    last = state
                time.sleep(0.002)
        except BaseException as error:  # reported by the main thread
            self.error = error
        finally:
            connection.close()

    def first(self, state: str, since: float) -> float | None:
        if self.error is not None:
            raise RuntimeError("the row poller failed") from self.error
        return next((t for s, t in list(self.seen) if s == state and t >= since), None)


def wait_for(condition, timeout: float, what: str, poll: float = 0.005):
    deadline = time.monotonic() + timeout
    while (value := condition()) is None:
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(poll)
    return value


def page_time(page, state: str, since: float, timeout: float) -> float:
    page.wait_for_function(
        "([state, since]) => window.__states.some((e) => e.state === state && e.t >= since)",
        arg=[state, since * 1000],
        timeout=timeout * 1000,
        polling=20,
    )
    return page.evaluate(PAGE_SAW, [state, since * 1000])["t"] / 1000


def check_page_clock(page, probes: int = 20) -> tuple[int, int, float, float]:
    """Read the page's clock between two time.time() calls, `probes` times.

    (reads that fell inside their bracket, probes, offset from the middle of the
    tightest bracket in ms, that bracket's width in ms); the page's clock is
    coarsened to 0.1 ms, allowed for.
    """
    inside, tightest = 0, None
    for _ in range(probes):
        before = time.time()
        shown = page.evaluate("() => performance.timeOrigin + performance.now()") / 1000
        after = time.time()
        inside += before - 0.0001 <= shown <= after + 0.0001
        if tightest is None or after - before < tightest[1]:
            tightest = (shown - (before + after) / 2, after - before)
    return inside, probes, 1000 * tightest[0], 1000 * tightest[1]


def transition(domain, kind: str, listener, poller, page) -> dict[str, float]:
    """One destroy() or create(); ms from just before the call to each observer seeing it."""
    state = "stopped" if kind == "stop" else "running"
    started = time.time()
    if kind == "stop":
        domain.destroy()
    else:
        domain.create()
    returned = time.time()
    seen = {
        "event": wait_for(lambda: listener.first(state, started), WAIT_SECONDS, f"the {state} event"),
        "row": wait_for(lambda: poller.first(state, started), WAIT_SECONDS, f"the row to show {state}"),
        "page": page_time(page, state, started, WAIT_SECONDS),
    }
    time.sleep(1.0)
    return {"call": 1000 * (returned - started)} | {k: 1000 * (t - started) for k, t in seen.items()}


def sign_in_and_open(page, panel_url: str, vm) -> None:
    page.goto(f"{panel_url}/accounts/login/")
    page.fill("#id_username", "bench")
    page.fill("#id_password", BENCH_PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{panel_url}/vms/")
    page.goto(f"{panel_url}/vms/{vm.uuid}/")
    page.wait_for_function("() => document.documentElement.dataset.live === 'connected'", timeout=30_000)
    time.sleep(0.5)  # the catch-up re-fetch the page makes when its socket opens
    shown = page.evaluate(INSTALL_OBSERVER)
    assert shown == "running", f"the page shows {shown!r}"


def report(results: dict[str, list[dict[str, float]]], load_before, load_after, clock_checks) -> None:
    runs = len(results["stop"])
    print(f"\nlive latency of a change made outside the panel, {runs} repetitions per transition")
    print("ms from just before the libvirt call (time.time()) until each observer saw the new state")
    width = 20
    for kind, call in [("stop", "destroy()"), ("start", "create()")]:
        rows = results[kind]
        print(f"\n{kind + ' (' + call + ')':<16}" + "".join(f"{HEADINGS[o]:>{width}}" for o in OBSERVERS))
        for name, pick in [("median", statistics.median), ("min", min), ("max", max)]:
            print(f"{name:<16}" + "".join(f"{pick([r[o] for r in rows]):>{width}.1f}" for o in OBSERVERS))
        monitor = statistics.median(r["row"] - r["event"] for r in rows)
        push = statistics.median(r["page"] - r["row"] for r in rows)
        print(f"median of (b)-(a) {monitor:.1f} ms (node monitor), of (c)-(b) {push:.1f} ms (push, re-fetch)")
    for label, (inside, probes, offset, bracket) in clock_checks:
        print(
            f"page clock vs time.time() {label}: inside the bracket on {inside}/{probes} reads;"
            f" tightest bracket {bracket:.2f} ms, page clock {offset:+.2f} ms from its middle"
        )
    print("load average (1, 5, 15 min) before: {:.2f} {:.2f} {:.2f}".format(*load_before))
    print("load average (1, 5, 15 min) after:  {:.2f} {:.2f} {:.2f}".format(*load_after))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    start_libvirt_event_loop()  # before any connection that should deliver events
    web = monitor = listener = poller = conn = None
    load_before = os.getloadavg()
    try:
        plan, image, user, node = prepare()
        vm = VirtualMachine.objects.create(
            owner=user, node=node, plan=plan, image=image, hostname="bench-live", state="running"
        )
        start_vm(vm)

        env = {**os.environ, "LOG_LEVEL": "INFO"}  # both say they are ready at INFO
        monitor = start_process(
            "node-monitor", [str(BIN / "python"), "manage.py", "node_monitor"], "watching node", env
        )
        port = free_port()
        web = start_process(
            "daphne",
            [str(BIN / "daphne"), "-b", "127.0.0.1", "-p", str(port), "kvmpanel.asgi:application"],
            "Listening on",
            env,
        )
        listener = EventListener(vm.domain_name)
        poller = RowPoller(vm.pk)
        poller.start()
        conn = libvirt.open(URI)
        domain = conn.lookupByName(vm.domain_name)  # ours: made above, named bench-…

        from playwright.sync_api import sync_playwright

        results = {"stop": [], "start": []}
        clock_checks = []
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            page = browser.new_page()
            try:
                sign_in_and_open(page, f"http://127.0.0.1:{port}", vm)
                clock_checks.append(("before", check_page_clock(page)))
                for kind in ("stop", "start"):  # warm-up: also proves every observer is listening
                    transition(domain, kind, listener, poller, page)
                for n in range(args.runs):
                    for kind in ("stop", "start"):
                        results[kind].append(transition(domain, kind, listener, poller, page))
                        r = results[kind][-1]
                        print(f"run {n + 1} {kind:<5} " + "  ".join(f"{o} {r[o]:.1f}" for o in OBSERVERS))
                clock_checks.append(("after", check_page_clock(page)))
            except Exception:
                page.screenshot(path=str(_setup.VAR / "bench-live-latency-failed.png"))
                raise
            finally:
                browser.close()
        report(results, load_before, os.getloadavg(), clock_checks)
    finally:
        if poller is not None:
            poller.stopping.set()
            poller.join(5)
        if listener is not None:
            listener.close()
        if conn is not None:
            conn.close()
        stop_process(web)
        stop_process(monitor)
        connection.close()  # the last connection closing removes SQLite's -wal and -shm files
        cleanup()


if __name__ == "__main__":
    main()
