"""ECHONET Lite: our own frame codec, data-driven device classes and emulated nodes on loopback."""
