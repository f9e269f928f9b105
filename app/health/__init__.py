"""Liveness, readiness and Prometheus metrics: routes."""
