"""Emulator of the Azure Monitor Logs Ingestion API (Sentinel custom tables); see ``app.py``."""
