"""The one error type the tool reports to its user."""

from __future__ import annotations


class SeriesError(Exception):
    """A problem the user can act on; printed without a traceback."""
