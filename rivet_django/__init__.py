"""rivet_django: Rivet Actors as a reusable Django app.

Importable before apps are ready: this module never imports models.
"""

from .definition import Actor, action, event, queue
from .exceptions import PublicError, UserError

__all__ = ["Actor", "PublicError", "UserError", "__version__", "action", "event", "queue"]

__version__ = "0.1.0"
