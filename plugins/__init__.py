"""Tollgate's built-in channel plugins.

Each is an ordinary pluggy plugin registered through the ``tollgate``
entry-point group, exactly as a third-party plugin would be.
"""
