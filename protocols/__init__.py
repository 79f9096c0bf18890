"""The wire protocols, one home for both ends: the emulated devices (``devices``) and the collector.

As pymodbus shares one PDU codec between its client and its server, the ECHONET Lite frame codec,
class definitions and property codecs (``protocols.echonet``) and the SunSpec model tables and point
codecs (``protocols.sunspec``) live here once.  A leaf: it imports nothing of ours, so the collector
reads devices without loading the emulator.

Each ECHONET Lite class and each SunSpec model is one module that describes it completely (what is on
the wire, what it means in the project's field vocabulary) and registers itself with one line; the
emulator and the collector both derive what they need from that entry.
"""
