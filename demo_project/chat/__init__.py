"""The chat demo: a ``chatRoom`` actor per room and a page that talks to it with the official JS client."""
