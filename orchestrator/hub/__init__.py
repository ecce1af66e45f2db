"""Kluis inside JupyterHub: the ticket authenticator, the project-aware spawners and the hub's
configuration. Runs in the hub's process and talks to the control plane over HTTP only."""
