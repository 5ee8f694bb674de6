"""The worker supervisor's restart delay (workers/pool.py): the processes
themselves are driven by test_platform, test_web and test_eligibility."""

from workers.pool import WORKER_HEALTHY_S, WORKER_RESTART_MAX_S, WORKER_RESTART_MIN_S, RestartDelay


def test_a_worker_restart_delay_doubles_while_it_keeps_dying_and_resets_after_a_healthy_run():
    delays = RestartDelay()
    quick = [delays.after_death(0.5) for _ in range(7)]
    assert quick[:3] == [WORKER_RESTART_MIN_S, 2 * WORKER_RESTART_MIN_S, 4 * WORKER_RESTART_MIN_S]
    assert quick[-1] == WORKER_RESTART_MAX_S
    # One that ran a while before it died: restarted at the minimum again,
    # not after the 8-16 s a few blips long ago had built up.
    assert delays.after_death(WORKER_HEALTHY_S) == WORKER_RESTART_MIN_S
    assert delays.after_death(0.5) == 2 * WORKER_RESTART_MIN_S
