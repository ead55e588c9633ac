"""The reminder demo: a ``reminder`` actor per user, built on ``self.schedule``."""
