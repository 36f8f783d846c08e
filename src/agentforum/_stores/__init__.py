"""Message stores: where the message tree lives."""
