"""LXD projects: routes."""
