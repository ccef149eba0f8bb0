"""Entry points of the client commands: ``bridge run`` (:mod:`bridge.app.run`) and ``bridge devices``."""
