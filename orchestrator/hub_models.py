"""Tables of the JupyterHub integration (launch tickets, ...). Imported by `orchestrator.models`."""

from __future__ import annotations
