"""replicator: offsite, encrypted, append-only replication to another provider.

Data flows one way through the package:
    sources/ -> planner -> engine -> vault/ -> stores/   (and catalogue on the side)
and back out through restore / verify. Commands live in cli/.
"""

__version__ = "0.1.0"
