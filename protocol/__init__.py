"""The wire: inter-actor messages (``protocol.messages``) and Kraken (``protocol.kraken``).

Nothing here does I/O policy beyond the Kraken clients, and nothing imports trading, actors,
persistence or monitoring.
"""
