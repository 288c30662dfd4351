"""What happened on each call, handed to metering and audit off the hot path."""
