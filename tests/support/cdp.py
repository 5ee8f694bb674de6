"""Headless Chromium driven over the DevTools protocol, stdlib only.

``--remote-debugging-pipe`` makes Chromium read protocol messages from its
fd 3 and write them to its fd 4, each a JSON object ended by a NUL byte — no
port and no websocket to speak. ``Browser.page()`` opens a tab and attaches
to it (flat sessions); a ``Page`` sends commands and waits for events.

Every wait is bounded; ``close()`` ends the browser's whole process group.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import subprocess
import threading
import time

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-default-apps", "--disable-extensions", "--mute-audio"]


class CDPError(RuntimeError):
    pass


class Browser:
    def __init__(self, user_data_dir, log_path, chromium=None):
        chromium = chromium or shutil.which("chromium")
        if not chromium:
            raise RuntimeError("chromium is missing: apt-get install chromium (.ci/run installs it)")
        child_in, self._out = os.pipe()  # we write commands, Chromium reads them on fd 3
        self._in, child_out = os.pipe()  # Chromium writes answers on fd 4, we read them
        # bash moves Chromium's ends to fds 3 and 4 and execs it; they are
        # first put at 10 or above, so that neither is already 3 or 4.
        high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in (child_in, child_out)]
        for fd in (child_in, child_out):
            os.close(fd)
        child_in, child_out = high
        script = f'exec "$0" "$@" 3<&{child_in} 4>&{child_out} {child_in}<&- {child_out}>&-'
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen(
            ["bash", "-c", script, chromium, *FLAGS, f"--user-data-dir={user_data_dir}",
             "--remote-debugging-pipe", "about:blank"],
            pass_fds=(child_in, child_out), stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        os.close(child_in)
        os.close(child_out)
        self._lock = threading.Condition()
        self._next_id = 0
        self._answers = {}
        self.events = []  # (sessionId, method, params), in arrival order
        self._closed = False
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        buffer = b""
        while True:
            try:
                chunk = os.read(self._in, 1 << 16)
            except OSError:
                chunk = b""
            if not chunk:
                with self._lock:
                    self._closed = True
                    self._lock.notify_all()
                return
            buffer += chunk
            *messages, buffer = buffer.split(b"\0")
            with self._lock:
                for raw in messages:
                    message = json.loads(raw)
                    if "id" in message:
                        self._answers[message["id"]] = message
                    else:
                        self.events.append((message.get("sessionId"), message["method"], message.get("params", {})))
                self._lock.notify_all()

    def send(self, method, params=None, session=None, timeout=15.0):
        with self._lock:
            self._next_id += 1
            ident = self._next_id
        message = {"id": ident, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._out, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        with self._lock:
            while ident not in self._answers:
                left = deadline - time.monotonic()
                if left <= 0 or self._closed:
                    raise CDPError(f"no answer to {method} within {timeout} s (browser closed: {self._closed})")
                self._lock.wait(left)
            answer = self._answers.pop(ident)
        if "error" in answer:
            raise CDPError(f"{method}: {answer['error']}")
        return answer.get("result", {})

    def wait_event(self, predicate, timeout=15.0, what="an event"):
        """The first event (sessionId, method, params) ``predicate`` accepts,
        among those already received too."""
        deadline = time.monotonic() + timeout
        seen = 0
        with self._lock:
            while True:
                for event in self.events[seen:]:
                    if predicate(*event):
                        return event
                seen = len(self.events)
                left = deadline - time.monotonic()
                if left <= 0 or self._closed:
                    raise CDPError(f"timed out waiting for {what}")
                self._lock.wait(left)

    def page(self):
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        return Page(self, session)

    def close(self):
        try:
            if not self._exited(0):
                try:
                    self.send("Browser.close", timeout=3)
                except (CDPError, OSError):
                    pass
                self._exited(5)
            # The group's leader is not reaped yet, so its id still names this
            # browser's group alone: its renderers and helpers go with it.
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(10)
        finally:
            for fd in (self._out, self._in):
                try:
                    os.close(fd)
                except OSError:
                    pass
            self._log.close()

    def _exited(self, timeout):
        """Whether the browser's main process has exited, without reaping it."""
        deadline = time.monotonic() + timeout
        while True:
            if os.waitid(os.P_PID, self.proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Page:
    def __init__(self, browser, session):
        self.browser = browser
        self.session = session
        for domain in ("Page", "Runtime", "Network"):
            self.send(f"{domain}.enable")

    def send(self, method, params=None, timeout=15.0):
        return self.browser.send(method, params, session=self.session, timeout=timeout)

    def events(self, method):
        return [params for session, m, params in list(self.browser.events)
                if session == self.session and m == method]

    def wait_event(self, method, predicate=lambda params: True, timeout=15.0):
        return self.browser.wait_event(lambda s, m, p: s == self.session and m == method and predicate(p),
                                       timeout=timeout, what=method)[2]

    def navigate(self, url, timeout=20.0):
        """Open ``url`` and wait for its load event."""
        loads = len(self.events("Page.loadEventFired"))
        answer = self.send("Page.navigate", {"url": url})
        if answer.get("errorText"):
            raise CDPError(f"navigating to {url}: {answer['errorText']}")
        deadline = time.monotonic() + timeout
        while len(self.events("Page.loadEventFired")) <= loads:
            if time.monotonic() > deadline:
                raise CDPError(f"{url} did not load within {timeout} s")
            time.sleep(0.05)

    def evaluate(self, expression, timeout=15.0):
        """The value of a JavaScript expression in the page (awaited if a promise)."""
        answer = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                "awaitPromise": True}, timeout=timeout)
        if "exceptionDetails" in answer:
            raise CDPError(f"{expression!r} threw: {answer['exceptionDetails']}")
        return answer["result"].get("value")

    def wait_for(self, expression, predicate=bool, timeout=15.0):
        """Evaluate ``expression`` until ``predicate`` accepts its value; that value."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.evaluate(expression)
            if predicate(value):
                return value
            if time.monotonic() > deadline:
                raise CDPError(f"{expression!r} is still {value!r} after {timeout} s")
            time.sleep(0.1)


def open_dashboard(page, site, leader=None):
    """Baton's dashboard on ``site`` (a tests.support.web.WebSite), opened
    the way an operator does: credentials in the URL, which the browser keeps
    for the origin and resends by itself (the dashboard's own fetch of
    /status carries none). Its first poll showing the leader (``leader``,
    default the site itself) proves the browser holds working credentials."""
    user, password = site.auth
    page.navigate(f"http://{user}:{password}@127.0.0.1:{site.port}/")
    page.wait_for('document.getElementById("leader-site").textContent', lambda v: v == (leader or site.name),
                  timeout=15)
