"""Profiles: routes and the profile service."""
