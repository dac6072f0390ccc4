"""Where a tracked value comes from: bit flags on its store."""

#: computed from sources made with ``Tracked(x, local=True)``: choices resolve at this point
LOCAL = 1
#: computed from global sources: choices keep every candidate
GLOBAL = 2
