"""Tables of the airlock (ingress uploads, egress output requests).

Imported by `orchestrator.models`."""

from __future__ import annotations
