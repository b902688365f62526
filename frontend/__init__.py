"""The staff panels' templates and static files: a package, so that an installed wheel
carries them (server.app finds them beside this file)."""
