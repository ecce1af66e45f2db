"""The HTTP interface: app factory, dependencies, error handling, middleware and routes."""
