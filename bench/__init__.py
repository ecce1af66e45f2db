"""Kluis benchmarks: goals are ratios measured in one run (see docs/development.md)."""
