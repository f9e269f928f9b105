"""Containers: routes (router*.py), their job kinds (jobs*.py), the service that creates and removes them, and the pure
parts (spec, constraints, addresses, view).
"""
