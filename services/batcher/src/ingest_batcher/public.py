"""The batcher's public module: what another package of the workspace may import from it.

The `ingest` CLI's `reconcile` command runs the batcher's own reconciliation with the
batcher's own settings, through this module only; the rest of ingest_batcher is the service's
own (the import contracts, [tool.importlinter] in the root pyproject.toml, check it).
"""

from ingest_batcher.reconcile import ReconcileReport, reconcile
from ingest_batcher.settings import BatcherSettings

__all__ = ["BatcherSettings", "ReconcileReport", "reconcile"]
