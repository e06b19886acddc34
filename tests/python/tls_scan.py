"""Scans a TLS server with sslyze, as a security reviewer would, and reports what it accepts.

Usage: tls_scan.py HOST PORT

Prints one JSON object:
  {"connectivity": "COMPLETED" | error text,
   "client_auth": "DISABLED" | "OPTIONAL" | "REQUIRED",
   "highest_version": "TLS_1_3",
   "accepted": {"ssl_2_0": [suite names], "ssl_3_0": [...], "tls_1_0": [...], "tls_1_1": [...],
                "tls_1_2": [...], "tls_1_3": [...]},
   "rejected": {version: number of suites tried and refused},
   "errors": {scan command: error text},          # scans that could not be completed
   "leaf": {"subject": "...", "san_uris": [...], "san_dns": [...]}}

A scanner cannot present a mesh certificate, so every handshake fails at client
authentication; the server has chosen the version and suite by then, and sslyze counts a
suite as accepted when the server answered the ClientHello with it.
"""

import json
import sys

from cryptography import x509
from sslyze import (
    ScanCommand,
    ScanCommandAttemptStatusEnum,
    Scanner,
    ServerNetworkLocation,
    ServerScanRequest,
    ServerScanStatusEnum,
)

SUITE_SCANS = {
    "ssl_2_0": ScanCommand.SSL_2_0_CIPHER_SUITES,
    "ssl_3_0": ScanCommand.SSL_3_0_CIPHER_SUITES,
    "tls_1_0": ScanCommand.TLS_1_0_CIPHER_SUITES,
    "tls_1_1": ScanCommand.TLS_1_1_CIPHER_SUITES,
    "tls_1_2": ScanCommand.TLS_1_2_CIPHER_SUITES,
    "tls_1_3": ScanCommand.TLS_1_3_CIPHER_SUITES,
}


def leaf_of(cert_info):
    deployments = cert_info.certificate_deployments
    if not deployments or not deployments[0].received_certificate_chain:
        return None
    leaf = deployments[0].received_certificate_chain[0]
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = san.get_values_for_type(x509.UniformResourceIdentifier)
        dns = san.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        uris, dns = [], []
    return {"subject": leaf.subject.rfc4514_string(), "san_uris": uris, "san_dns": dns}


def main():
    host, port = sys.argv[1], int(sys.argv[2])
    request = ServerScanRequest(
        server_location=ServerNetworkLocation(hostname=host, port=port),
        scan_commands={*SUITE_SCANS.values(), ScanCommand.CERTIFICATE_INFO},
    )
    scanner = Scanner()
    scanner.queue_scans([request])
    out = {"accepted": {}, "rejected": {}, "errors": {}}
    for result in scanner.get_results():
        if result.scan_status != ServerScanStatusEnum.COMPLETED:
            out["connectivity"] = str(result.connectivity_error_trace)
            break
        out["connectivity"] = "COMPLETED"
        conn = result.connectivity_result
        out["client_auth"] = conn.client_auth_requirement.name
        out["highest_version"] = conn.highest_tls_version_supported.name
        scans = result.scan_result
        for version in SUITE_SCANS:
            attempt = getattr(scans, f"{version}_cipher_suites")
            if attempt.status != ScanCommandAttemptStatusEnum.COMPLETED:
                out["errors"][version] = str(attempt.error_trace or attempt.error_reason)
                continue
            out["accepted"][version] = [
                s.cipher_suite.name for s in attempt.result.accepted_cipher_suites
            ]
            out["rejected"][version] = len(attempt.result.rejected_cipher_suites)
        info = scans.certificate_info
        if info.status == ScanCommandAttemptStatusEnum.COMPLETED:
            out["leaf"] = leaf_of(info.result)
        else:
            out["errors"]["certificate_info"] = str(info.error_trace or info.error_reason)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
