"""A call and what it runs on: the station (audio devices, for the process), the call (one conversation,
over one connection after another) and each connection (a link and its runtime). docs/architecture.md
"Who owns what, for how long" draws it."""
