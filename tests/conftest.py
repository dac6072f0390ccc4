"""Hypothesis in CI: the same examples on every run (``CI`` set, as ``.ci/run`` is run), so a
rare generated case fails a developer's run, not a landing; locally it keeps exploring."""
import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True, print_blob=True)
settings.register_profile("dev", print_blob=True)
settings.load_profile("ci" if os.environ.get("CI") else "dev")
