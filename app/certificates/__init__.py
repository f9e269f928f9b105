"""Trusted certificates and trust tokens: routes."""
