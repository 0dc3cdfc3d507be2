"""Benchmark: how fast the tenant emulator (its own process, TLS) serves Management Activity
content — list every blob of DLP.All, then download them with 4 client threads, twice (first
generated, then from the emulator's compressed blob cache, 128 MB by default).

    .venv/bin/python bench/bench_tenant_emulator.py [records] [records_per_blob]

This bounds what the sources benchmark can measure: a source cannot read faster than the
emulator generates. Numbers depend on machine load (client and emulator share the CPU).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import ssl
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import httpx


def main() -> None:
    records = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    per_blob = int(sys.argv[2]) if len(sys.argv) > 2 else 200
    with tempfile.TemporaryDirectory() as tmp:
        info = os.path.join(tmp, "info.json")
        args = ["--port", "0", "--state-dir", tmp, "--info-file", info, "--audit-records", str(records)]
        proc = subprocess.Popen(
            [sys.executable, "-m", "emulators.tenant", *args, "--days", "3", "--records-per-blob", str(per_blob)],
            stdout=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 60
            while not os.path.exists(info) and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(0.2)
            with open(info) as fh:
                d = json.load(fh)
            ctx = ssl.create_default_context(cafile=d["ca_file"])
            client = httpx.Client(verify=ctx, timeout=120, limits=httpx.Limits(max_connections=8))
            token = client.post(
                f"{d['url']}/{d['tenant_id']}/oauth2/v2.0/token",
                data={
                    "grant_type": "client_credentials",
                    "client_id": d["client_id"],
                    "client_secret": d["client_secret"],
                    "scope": "https://manage.office.com/.default",
                },
            ).json()["access_token"]
            headers = {"Authorization": f"Bearer {token}"}
            root = f"{d['url']}/api/v1.0/{d['tenant_id']}/activity/feed"
            client.post(f"{root}/subscriptions/start", params={"contentType": "DLP.All"}, headers=headers)
            started = time.monotonic()
            uris: list[str] = []
            now = time.time()
            start = now - 3 * 86400 - 7200
            while start < now + 3600:
                end = min(start + 86400, now + 3600)
                fmt = "%Y-%m-%dT%H:%M:%S"
                params = {
                    "contentType": "DLP.All",
                    "startTime": dt.datetime.fromtimestamp(start, dt.UTC).strftime(fmt),
                    "endTime": dt.datetime.fromtimestamp(end, dt.UTC).strftime(fmt),
                }
                r = client.get(f"{root}/subscriptions/content", params=params, headers=headers)
                while True:
                    uris += [b["contentUri"] for b in r.json()]
                    nxt = r.headers.get("NextPageUri")
                    if not nxt:
                        break
                    r = client.get(nxt, headers=headers)
                start = end
            listed = time.monotonic()

            def fetch(uri: str) -> int:
                return len(client.get(uri, headers=headers).json())

            with ThreadPoolExecutor(4) as pool:
                total = sum(pool.map(fetch, uris))
            done = time.monotonic()
            print(f"listed {len(uris)} blobs in {listed - started:.2f} s")
            print(f"first pass (generated): {total} records in {done - listed:.2f} s: {total / (done - listed):,.0f}/s")
            with ThreadPoolExecutor(4) as pool:
                again = sum(pool.map(fetch, uris))
            cached = time.monotonic() - done
            print(f"second pass (blob cache): {again} records in {cached:.2f} s: {again / cached:,.0f}/s")
        finally:
            proc.terminate()
            proc.wait()


if __name__ == "__main__":
    main()
