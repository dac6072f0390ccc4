"""Where a tracked value comes from: bit flags on its store."""

#: computed from sources made with ``Tracked(x, local=True)``: choices resolve at this point
LOCAL = 1
#: computed from global sources: choices keep every candidate
GLOBAL = 2
#: drawn by a random op (``rand_like``, ``bernoulli``, dropout masks), or computed from such a
#: draw: not a constant (another draw at another call), though not derived from tracked values
RANDOM = 4
#: the flags of values computed from tracked values (``store.derived``)
SOURCES = LOCAL | GLOBAL


def drawn_globally(arguments) -> bool:
    """Whether a random op draws from the global generator (its values then differ between calls of
    ``f``: ``RANDOM``).  A draw from an explicit ``generator=`` is the caller's to reproduce: a
    generator seeded inside ``f`` gives the same values every call, so they count as constants."""
    return arguments.get("generator") is None
