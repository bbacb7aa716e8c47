"""Tollgate's default policy bundle: YAML files, no Python.

This file only makes the folder installable as package data; the bundle is
the ``*.yaml`` files beside it (see docs/policies.md).
"""
