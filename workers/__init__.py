"""Scheduled jobs that run on the leader's site only, once per tick."""
