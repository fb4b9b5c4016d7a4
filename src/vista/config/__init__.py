from vista.config.resolvers import register_resolvers
from vista.config.typed import ConfigError
from vista.config.validate import validate

__all__ = ["ConfigError", "register_resolvers", "validate"]

register_resolvers()
