"""An event-synced model of what every remote serves, so that reads are answered from memory.

`Mirror` (mirror.py) is the facade the routes and jobs use; `RemoteMirror` (remote.py) keeps one remote in sync
from its events stream; `Collection` (collection.py) holds the records of one kind in one project, with versions
for watchers. What is mirrored, and how it is shaped, is told by the resource packages (`MirrorKind`, kinds.py):
the mirror itself knows no resource.
"""

from app.mirror.collection import Change, Record, Watcher, etag_of, render, stable_digest, stable_part
from app.mirror.kinds import MirrorKind, Shaped
from app.mirror.mirror import BYPASS, HIT, MISS, Listing, Lookup, Mirror

__all__ = ["BYPASS", "HIT", "MISS", "Change", "Listing", "Lookup", "Mirror", "MirrorKind", "Record", "Shaped",
           "Watcher", "etag_of", "render", "stable_digest", "stable_part"]
