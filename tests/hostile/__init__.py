"""A hostile fake Cradle API and a canary host, for the hostile-input end-to-end suite.

The simulator plays a Cradle that is sometimes unwell but always honest. These servers play one
that lies: each test scripts, byte for byte, what a list call answers and how each recording is
served, and a canary on another loopback port stands for "any other host" and counts what
reaches it, which must be nothing.
"""

from tests.hostile.server import Canary, HostileApi, Reply, Seen

__all__ = ["Canary", "HostileApi", "Reply", "Seen"]
