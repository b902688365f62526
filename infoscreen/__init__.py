"""The `infoscreen` command: one subcommand for every process and tool."""
