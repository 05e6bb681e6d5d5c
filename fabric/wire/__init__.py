"""Messages between nodes and their msgpack codec."""
