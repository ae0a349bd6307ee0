"""autoprune: hardware-aware AutoML pruning search.

Dependencies point one way: ``errors``/``plan`` (core types) → ``models``, ``data``,
``pruning``, ``hardware`` (domain) → ``search`` (engine) → ``cli`` and ``report``.
"""

__version__ = "0.1.0"
