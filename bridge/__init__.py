"""bridge: talk to the OpenAI Realtime API over WebRTC from a machine without a browser."""

__version__ = "0.1.0"
