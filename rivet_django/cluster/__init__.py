"""The actor system across processes: which process runs an actor, and how an operation gets there.

- :mod:`.gateway`: the one dispatch seam. Every way in (HTTP, WebSocket, the local
  client, ``self.client()``) hands the gateway an operation in two forms, in-process
  and on the wire; the gateway runs the first where the actor lives here and sends
  the second to the node that holds the actor's lease otherwise.
- :mod:`.directory`: the live nodes, read from the ``Node`` table.
- :mod:`.peers`: the wire to another node (its public actor API over HTTP and WebSocket).
- :mod:`.placement`: where an actor that no live node holds wakes up.
"""

from .gateway import Gateway, current_gateway

__all__ = ["Gateway", "current_gateway"]
