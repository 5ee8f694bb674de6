"""gunicorn configuration: the web process of a Baton site.

The port is bound before any Baton code talks to Redis: the elector, the
scheduler loop and the embedded worker start in ``when_ready`` (in the
master, once per dyno, whatever WEB_CONCURRENCY is) and connect lazily, so a
Redis that is down at boot never delays the bind (Heroku's R10).
"""

import os
import signal
import sys

from app.settings import WebSettings
from election.logfmt import configure_stdout_logging
from workers.entries import ScheduleError
from workers.loader import load_schedule
from workers.parent_death import die_with_parent
from workers.settings import ConfigError
from workers.shutdown import HTTP_STOP_S, WINDING_DOWN_NICENESS, exit_without_stop_signals

# Validate before gunicorn binds anything: a mistake is one line and exit 2.
try:
    SETTINGS = WebSettings.from_env()
    load_schedule(SETTINGS.core.schedule_module)
    SETTINGS.core.refuse_cluster()
except (ConfigError, ScheduleError) as exc:
    print(f"baton: {exc}", file=sys.stderr)
    sys.exit(2)

bind = f"0.0.0.0:{SETTINGS.port}"
workers = SETTINGS.web_concurrency
# HTTP requests in flight when the master stops get this long (the stop's
# HTTP_STOP_S step); the lease handoff does not wait for them.
graceful_timeout = int(HTTP_STOP_S)
timeout = 30
# gunicorn >= 25 opens a control socket per user; several local sites would
# fight over it, and Baton does not use it.
control_socket_disable = True
accesslog = None


# How long the runtime waits for gunicorn's first HTTP workers to be forked.
FIRST_FORKS_WAIT_S = 10.0


def when_ready(server):
    import threading
    import time

    from app.runtime import SiteRuntime

    configure_stdout_logging()
    runtime = SiteRuntime(SETTINGS)
    runtime.publish_state_file()
    server.baton_runtime = runtime

    # gunicorn forks its HTTP workers right after this hook. A fork taken
    # while one of Baton's threads is importing a module (its first Redis
    # connection imports codecs lazily) leaves that module's import lock held
    # in the child, whose first request then hangs forever. So the runtime's
    # threads start once the first workers exist, and the lazy imports are
    # done here, before any later re-fork.
    "baton".encode("idna")

    def start_after_first_forks():
        deadline = time.monotonic() + FIRST_FORKS_WAIT_S
        while len(server.WORKERS) < server.num_workers and time.monotonic() < deadline:
            time.sleep(0.01)
        runtime.start()

    threading.Thread(target=start_after_first_forks, name="baton-start", daemon=True).start()
    # SIGTERM/SIGINT start the handoff at once; gunicorn's own stop (which
    # only queues the signal for its main loop) is passed the signal once the
    # lease is released, so HTTP workers keep answering while a job finishes
    # and nothing competes with the release. Repeats change nothing.
    for sig in (signal.SIGTERM, signal.SIGINT):
        gunicorn_handler = signal.getsignal(sig)

        def handler(signum, frame, gunicorn_handler=gunicorn_handler):
            runtime.request_shutdown(handed_over=lambda: gunicorn_handler(signum, None))

        signal.signal(sig, handler)


def post_worker_init(worker):
    """An HTTP worker exits with its master, however the master dies (a
    ``kill -9`` included): by itself gunicorn notices its new parent only
    within ``timeout / 2`` (15 s). It is forked by the master's main thread,
    which lives as long as the master (workers/parent_death.py)."""
    if not die_with_parent(signal.SIGTERM, worker.ppid):
        worker.alive = False


def worker_exit(server, worker):
    """An HTTP worker done serving leaves the CPU to the master, whose release
    of the lease the other site waits for (workers/shutdown.py)."""
    os.nice(WINDING_DOWN_NICENESS)


def child_exit(server, worker):
    """An HTTP worker exited. During Baton's shutdown it is not replaced:
    Heroku signals every process of the dyno, so HTTP workers exit at the
    first SIGTERM while the master still waits for a job; forking new ones
    then (with Baton's threads running) would serve nobody — the router sends
    nothing to a stopping dyno — and risk a child that deadlocks."""
    runtime = getattr(server, "baton_runtime", None)
    if runtime is not None and runtime.stopping:
        server.num_workers = max(0, server.num_workers - 1)


def on_exit(server):
    runtime = getattr(server, "baton_runtime", None)
    if runtime is not None:
        runtime.wait_for_shutdown()
    exit_without_stop_signals()
