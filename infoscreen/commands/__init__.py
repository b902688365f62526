"""The subcommands of `infoscreen`, one module per group; each registers its parsers."""

from infoscreen.commands import backups, broker, certs, compose, fleet, processes, staff

# In the order `infoscreen --help` lists them.
GROUPS = (processes, backups, fleet, broker, staff, certs, compose)
