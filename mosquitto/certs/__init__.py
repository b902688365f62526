"""Certificates for the broker's TLS: our own CA, the server certificate, device certificates.

One directory (default BROKER_DIR/certs) holds everything:

    ca.crt, ca.key          the current CA (BasicConstraints ca=True critical, KeyUsage, SKI, AKI)
    ca-bundle.crt           what the broker (cafile) and every client trust: the current CA, and
                            during a CA rollover the previous one too
    ca-previous.crt         the previous CA, only while a rollover is in progress
    server.crt, server.key  the broker's certificate (serverAuth, a SAN for every name and IP
                            clients use); server.crt holds the leaf only (Mosquitto's certfile)
    clients/<uuid>.crt/.key device certificates (clientAuth, CN = uuid) for mutual TLS

Key files are 0600, certificates 0644; every file is replaced atomically, so a broker that
reloads never reads half a file. Keys are EC P-256 unless RSA 3072 is asked for.

CA rollover (runbook). Mosquitto (2.0) reads its `cafile` only when it starts: a SIGHUP
reloads the server certificate and key, not the bundle, so bundle changes need a restart.
1. `rollover_ca`: a new CA; ca-bundle.crt holds new + previous. Nothing served changes yet;
   after a broker restart it accepts client certificates of both CAs.
2. Give every client (and the backend's MQTT_TLS_CA_CERT) the new ca-bundle.crt.
3. `rotate_server` (signed by the new CA) and reload (SIGHUP is enough); `issue_client`
   again for mTLS devices.
4. `finish_rollover` (refused while a certificate still needs the previous CA): the previous
   CA leaves the bundle; restart the broker and hand out the bundle once more.
"""

from mosquitto.cert_defaults import (  # noqa: F401 - part of this package's interface
    CA_COMMON_NAME,
    CA_DAYS,
    CLIENT_DAYS,
    ERROR_DAYS,
    KEY_TYPES,
    SERVER_DAYS,
    WARN_DAYS,
)
from mosquitto.certs.checking import (  # noqa: F401
    check,
)
from mosquitto.certs.files import (  # noqa: F401
    BACKDATE,
    HOSTNAME_RE,
    ORGANIZATION,
    CertError,
    CertStatus,
    CertStore,
    CheckReport,
    Issued,
    KeyType,
    PrivateKey,
    Problem,
    load_cert,
    load_key,
    validate_dns_name,
    validate_ip,
    validate_uuid,
    write_public,
)
from mosquitto.certs.issuing import (  # noqa: F401
    init_ca,
    issue_client,
    issue_server,
    san_strings,
    server_sans,
)
from mosquitto.certs.rotation import (  # noqa: F401
    finish_rollover,
    rollover_ca,
    rotate_server,
)
