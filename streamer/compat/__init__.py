"""Compatibility surfaces: other protocols (OpenAI, Wyoming, Deepgram) as thin adapters onto the session host."""
