"""Skip this package's doctests where triton is not installed: it is an optional extra."""

import importlib.util

collect_ignore_glob = [] if importlib.util.find_spec("triton") else ["*.py"]
