"""One module per chat channel: its message format, limits, signing and error codes."""
