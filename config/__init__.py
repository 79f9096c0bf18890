"""The one configuration loader: a TOML file, its sections, typed settings, and one error type.

Every command reads the same file (``hems.example.toml`` shows every section) through this package:
a file that was named must exist, a section or key nobody knows is refused with the list of known
ones, and every value is checked against the type the setting declares (``Literal`` choices
included), defaults of ``None`` or not.  Errors are ``ConfigError`` naming the file, the section and
the key, so "invalid config" never costs an installer an afternoon.

It imports nothing of ours, so every package (devices included) may use it without breaking the
layering; each package still owns its own settings (``PipelineConfig``, ``CollectorConfig``, the
command-line options of ``hems serve``/``demo``/``devices``).
"""

from config.errors import ConfigError
from config.flags import parse_args_with_config
from config.loader import SECTIONS, ConfigFile, read
from config.typed import build, check_value, settings

__all__ = [
    "SECTIONS",
    "ConfigError",
    "ConfigFile",
    "build",
    "check_value",
    "parse_args_with_config",
    "read",
    "settings",
]
