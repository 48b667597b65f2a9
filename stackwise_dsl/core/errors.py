"""What stops a run, in words for the person who started it."""

from __future__ import annotations


class RunError(Exception):
    """A run that cannot go on, with a message for the person who started it."""


class Damaged(RunError):
    """A file of a run directory that cannot be used as it is; the message names the file,
    what is wrong with it and what to do. Nothing has been changed when it is raised."""
