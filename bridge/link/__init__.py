"""The connection to the model, one interface (:class:`RealtimeLink`), two transports: webrtc and ws."""
