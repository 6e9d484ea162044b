"""The commands: ``python -m simplenn.train``, ``evaluate``, ``predict`` and ``export``
(their ``main`` functions live here), with shared argument handling in :mod:`.common`."""
