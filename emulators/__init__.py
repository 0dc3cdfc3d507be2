"""Emulators of the peers dlpfwd talks to (Microsoft tenant, Splunk HEC, Logs Ingestion,
ServiceNow), behaving as the documented services do. Used by the tests, the demo, and by
users for dry runs."""
