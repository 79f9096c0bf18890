"""The root of every error the pipeline raises on purpose.

One root lets a caller (the ``hems`` command above all) tell "the pipeline refused, here is why" from
a bug, and turn the first into a one-line message instead of a traceback.  Each error keeps its old
name and module, and the builtin base it had (``ValueError``, ``RuntimeError``), so no caller changes.

``StoreUnavailable`` is the one that is not a failure of the data: the store is down, the data is
intact and will be retried from the spool.  Everything else is a refusal that a retry cannot fix.
"""

from __future__ import annotations


class PipelineError(Exception):
    """Base of every error the pipeline raises on purpose."""


class SchemaError(PipelineError):
    """A store's schema does not fit this code (a database from a newer release, a column missing
    after migration): an error to fix, not an outage to wait out, so the writer never spools for it."""
