"""The test harness: ports, run-time PKI, real TLS peers and servers, the live app and browser (tests and bench)."""
