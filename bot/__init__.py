"""coopbot: a Matrix chat-ops bot for Co-op Cloud style Docker Swarm hosting."""

__version__ = "0.1.0"
