"""Defaults of the certificate tooling, without importing `cryptography` (the CLI shows
them in --help on every start)."""

CA_DAYS = 3650
SERVER_DAYS = 397
CLIENT_DAYS = 825
WARN_DAYS = 30
ERROR_DAYS = 7
KEY_TYPES = ("ec", "rsa")
CA_COMMON_NAME = "Infoscreen fleet CA"
