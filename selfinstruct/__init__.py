"""selfinstruct: turn a few hand-written tasks into filtered instruction-tuning data."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("selfinstruct")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
