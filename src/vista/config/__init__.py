from vista.config.resolvers import register_resolvers
from vista.config.validate import ConfigError, validate

__all__ = ["ConfigError", "register_resolvers", "validate"]

register_resolvers()
