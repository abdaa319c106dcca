"""The Kraken protocol: REST client, WebSocket v2 session, codec, L2 book, pair metadata."""
