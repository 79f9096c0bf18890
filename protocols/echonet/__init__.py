"""ECHONET Lite: the frame codec (``frame``), property codecs (``codecs``), what a class entry says
(``entry``), the node profile (``node_profile``) and the classes themselves (``classes``)."""
