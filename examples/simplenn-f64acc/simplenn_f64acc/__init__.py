"""simplenn backend ``f64acc``: the NumPy ops with float64 accumulation for float32
parameters.

simplenn finds it through the entry point ``f64acc`` in the group
``simplenn.backends``, which names :func:`register`. Importing this package imports
nothing else; the ops (:mod:`simplenn_f64acc.ops`) are imported when the backend is
first built.
"""

__version__ = "0.1.0"


def register() -> None:
    """Register backend ``f64acc`` with simplenn (``auto`` never picks it)."""
    import simplenn.backends

    simplenn.backends.register(
        "f64acc",
        "simplenn_f64acc.ops:F64AccOps",
        install_hint="pip install ./examples/simplenn-f64acc",
        priority=-1,
    )
