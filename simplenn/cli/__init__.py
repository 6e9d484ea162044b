"""The commands: ``python -m simplenn.train``, ``evaluate`` and ``predict`` (their
``main`` functions live here), with shared argument handling in :mod:`.common`."""
