"""Deterministic, streaming generator of a tenant's DLP activity.

Every record is derived from ``(seed, index)`` alone, so any record, content blob, alert or
incident can be produced on demand without holding the data set in memory, and the same
seed always gives the same data (timestamps are relative to the data set's ``anchor``).

Layout:

* audit record ``i`` (0 <= i < n) happens at about ``t0 + i * step`` (``step = days / n``);
  its workload is Exchange, SharePoint, OneDrive, MicrosoftTeams or Endpoint;
* content blob ``k`` holds the records ``[k*B, (k+1)*B)`` of its feed and is created
  ``blob_latency``-ish seconds after its last record; DLP.All carries every record, the
  Audit.* feeds the records of their workloads (Audit.General: Teams and Endpoint);
* alert ``j`` is about audit record ``j*K + r`` (``K = alert_every``); every 7th alert is a
  non-DLP Defender alert for the same user; incident ``m`` groups alerts ``[m*G, (m+1)*G)``.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import math
import random
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from emulators.tenant import catalog
from emulators.tenant.config import EmulatorConfig, FaultConfig

WORKLOADS: tuple[tuple[str, int], ...] = (
    ("Exchange", 30),
    ("SharePoint", 20),
    ("OneDrive", 18),
    ("MicrosoftTeams", 12),
    ("Endpoint", 20),
)
_WORKLOAD_CUM: list[tuple[float, str]] = []
_acc = 0
for _name, _w in WORKLOADS:
    _acc += _w
    _WORKLOAD_CUM.append((_acc / 100.0, _name))

CONTENT_TYPES: tuple[str, ...] = (
    "Audit.AzureActiveDirectory",
    "Audit.Exchange",
    "Audit.SharePoint",
    "Audit.General",
    "DLP.All",
)
FEED_OF_WORKLOAD = {
    "Exchange": "Audit.Exchange",
    "SharePoint": "Audit.SharePoint",
    "OneDrive": "Audit.SharePoint",
    "MicrosoftTeams": "Audit.General",
    "Endpoint": "Audit.General",
}
RECORD_TYPE_NAMES = {11: "complianceDLPSharePoint", 13: "complianceDLPExchange", 63: "dlpEndpoint"}
EXPIRY_SECONDS = 7 * 86400
LIVE_DAYS = 7
ZERO_GUID = "00000000-0000-0000-0000-000000000000"


def rng(seed: int, *parts: object) -> random.Random:
    """The random stream of one (seed, kind, index) tuple; stable across runs and platforms."""
    return random.Random("/".join([str(seed), *map(str, parts)]))


def guid(r: random.Random) -> str:
    """A random (version 4) GUID string from ``r``."""
    h = f"{r.getrandbits(128):032x}"
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-{h[20:]}"


@functools.lru_cache(maxsize=4096)
def name_guid(text: str) -> str:
    """A stable GUID for a name (sites, rules, messages): hex of its MD5, in GUID layout."""
    h = hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _microseconds(t: float) -> float:
    """``t`` rounded the way a client parsing :func:`graph_time` output sees it."""
    return dt.datetime.fromtimestamp(t, dt.UTC).timestamp()


def mgmt_time(t: float) -> str:
    """Management API CreationTime style: UTC, no zone suffix, no fraction."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t))


def graph_time(t: float) -> str:
    """Graph style: 7 fractional digits and ``Z``."""
    d = dt.datetime.fromtimestamp(t, dt.UTC)
    return d.strftime("%Y-%m-%dT%H:%M:%S.") + f"{d.microsecond:06d}0Z"


@dataclass(frozen=True)
class User:
    upn: str
    display: str
    object_id: str
    sid: str
    puid: str
    device: str
    device_id: str
    aad_device_id: str
    ip: str


@dataclass(frozen=True)
class Facts:
    """What happened in audit record ``index``; records, alerts and ground truth use the same facts."""

    index: int
    id: str
    time: float
    workload: str
    user: User
    policy: catalog.Policy
    rule: catalog.Rule
    policy_id: str
    rule_id: str
    sits: tuple[tuple[int, int, int], ...]  # (sit index, count, confidence)
    operation: str
    exception: str  # "", "override", "undo", "falsepositive"
    justification: str
    object_name: str  # file name or message subject
    object_url: str  # file URL, message id or local path
    recipients: tuple[str, ...]
    label: int | None
    incident_guid: str
    malformed: bool
    backdated: bool
    extra: int  # further random bits for details


@dataclass(frozen=True)
class Blob:
    """One content blob of one feed."""

    content_type: str
    index: int
    created: float
    visible_at: float
    first: int
    last: int  # exclusive
    late: bool
    duplicates: tuple[int, ...]  # record indices repeated from the previous blob

    @property
    def content_id(self) -> str:
        stamp = dt.datetime.fromtimestamp(self.created, dt.UTC).strftime("%Y%m%d%H%M%S")
        ct = self.content_type.replace(".", "_")
        return f"{stamp}{self.index:09d}${stamp}{self.index:09d}${ct.lower()}${ct}$emu0001"

    @property
    def expires(self) -> float:
        return self.created + EXPIRY_SECONDS


def parse_content_id(content_id: str) -> tuple[str, int] | None:
    """(content type, blob index) of a content id made by :attr:`Blob.content_id`, else None."""
    parts = content_id.split("$")
    if len(parts) != 5 or len(parts[0]) != 23 or not parts[0].isdigit():
        return None
    ct = parts[3].replace("_", ".")
    if ct not in CONTENT_TYPES:
        return None
    return ct, int(parts[0][14:])


class Dataset:
    """The generated tenant. Cheap to build; every item is computed on demand."""

    def __init__(self, config: EmulatorConfig, anchor: float, tenant_id: str) -> None:
        self.config = config
        self.faults: FaultConfig = config.faults
        self.seed = config.seed
        self.tenant_id = tenant_id
        self.domain = config.tenant_domain
        self.history = max(0, int(config.audit_records))
        self.anchor = anchor
        self.span = max(60.0, config.days * 86400.0)
        self.t0 = anchor - self.span
        self.step = self.span / max(1, self.history)
        # live: activity goes on after the anchor at the same rate, for LIVE_DAYS
        self.n = self.history + (int(LIVE_DAYS * 86400 / self.step) if config.live and self.history else 0)
        self.blob_size = max(1, int(config.records_per_blob))
        self.blob_count = math.ceil(self.n / self.blob_size)
        self.alert_every = max(1, int(config.alert_every))
        self.alert_count = self.n // self.alert_every
        self.per_incident = max(1, int(config.alerts_per_incident))
        self.incident_count = math.ceil(self.alert_count / self.per_incident)
        self.astep = self.alert_every * self.step
        self.users = [self._user(u) for u in range(max(1, config.users))]
        # label-based matches carry the all-zero PolicyId in real records
        self.policy_ids = {
            p.key: (
                ZERO_GUID
                if p.label is not None
                else str(uuid.uuid5(uuid.NAMESPACE_URL, f"dlpfwd/{self.seed}/policy/{p.key}"))
            )
            for p in catalog.POLICIES
        }
        self.rule_ids = {
            r.key: str(uuid.uuid5(uuid.NAMESPACE_URL, f"dlpfwd/{self.seed}/rule/{r.key}"))
            for p in catalog.POLICIES
            for r in p.rules
        }

    # ------------------------------------------------------------------ people and devices
    def _user(self, u: int) -> User:
        r = rng(self.seed, "user", u)
        base = catalog.PEOPLE[u % len(catalog.PEOPLE)]
        first, last = base.split(" ", 1)
        if u >= len(catalog.PEOPLE):
            last = f"{catalog.SURNAMES[(u // len(catalog.PEOPLE)) % len(catalog.SURNAMES)]}{u}"
        display = f"{first} {last}"
        alias = f"{first}.{last}".lower().replace(" ", "")
        device = f"LT-{first[:3].upper()}{last[:3].upper()}-{u % 100:02d}"
        return User(
            upn=f"{alias}@{self.domain}",
            display=display,
            object_id=guid(r),
            sid=f"S-1-12-1-{r.getrandbits(32)}-{r.getrandbits(32)}-{r.getrandbits(32)}-{r.getrandbits(32)}",
            puid=f"1003{r.getrandbits(44):012X}",
            device=device,
            device_id=f"{r.getrandbits(160):040x}",
            aad_device_id=guid(r),
            ip=f"10.{r.randrange(1, 250)}.{r.randrange(1, 250)}.{r.randrange(2, 250)}",
        )

    # ------------------------------------------------------------------ audit records
    def _tw(self, i: int) -> tuple[float, float]:
        """The first two draws of record ``i``'s stream: its time offset and its workload."""
        r = rng(self.seed, "a", i)
        return r.random(), r.random()

    def record_time(self, i: int) -> float:
        """When record ``i`` happened, before any out-of-order backdating."""
        return self.t0 + (i + self._tw(i)[0]) * self.step

    def workload(self, i: int, x: float | None = None) -> str:
        if x is None:
            x = self._tw(i)[1]
        for bound, name in _WORKLOAD_CUM:
            if x < bound:
                return name
        return WORKLOADS[-1][0]

    def in_feed(self, i: int, content_type: str) -> bool:
        return content_type == "DLP.All" or FEED_OF_WORKLOAD[self.workload(i)] == content_type

    def is_malformed(self, i: int) -> bool:
        rate = self.faults.malformed_rate
        return rate > 0 and rng(self.seed, "bad", i).random() < rate

    def facts(self, i: int) -> Facts:
        r = rng(self.seed, "a", i)
        u_time, u_workload = r.random(), r.random()  # the same draws as _tw(i)
        record_id = guid(r)  # the third draw: see record_id()
        workload = self.workload(i, u_workload)
        user = self.users[r.randrange(len(self.users))]
        policy = catalog.POLICIES[r.randrange(len(catalog.POLICIES))]
        rule = policy.rules[r.randrange(len(policy.rules))]
        n_sits = 1 if r.random() < 0.7 else 2
        picks = r.sample(rule.sits, min(n_sits, len(rule.sits)))
        sits = tuple(
            (s, rule.min_count + r.randrange(0, 4 if rule.min_count < 10 else 40), r.choice((75, 85, 85, 95)))
            for s in picks
        )
        x = r.random()
        exception, justification = "", ""
        if workload in ("SharePoint", "OneDrive"):
            if x < 0.12:
                operation, exception = "DlpRuleUndo", "undo"
            elif x < 0.20:
                operation, exception = "DlpInfo", "falsepositive"
            else:
                operation = "DLPRuleMatch" if r.random() < 0.5 else "DlpRuleMatch"
        elif workload in ("Exchange", "MicrosoftTeams"):
            if x < 0.10:
                operation, exception = "DlpRuleMatch", "override"
            elif x < 0.15 and workload == "Exchange":
                operation, exception = "DlpRuleUndo", "undo"
            else:
                operation = "DlpRuleMatch"
        else:
            operation = catalog.ENDPOINT_OPERATIONS[r.randrange(len(catalog.ENDPOINT_OPERATIONS))][0]
            if x < 0.1:
                exception = "override"
        if exception in ("override", "undo"):
            justification = r.choice(
                (
                    "Business justification: required by the customer contract",
                    "Manager approved, ticket CHG-20931",
                    "Sending to our auditor",
                    "False positive: test data only",
                )
            )
        stem = catalog.FILE_STEMS[r.randrange(len(catalog.FILE_STEMS))]
        ext = catalog.FILE_EXTS[r.randrange(len(catalog.FILE_EXTS))]
        alias = user.upn.split("@")[0]
        recipients: tuple[str, ...] = ()
        if workload in ("Exchange", "MicrosoftTeams"):
            name = catalog.SUBJECTS[r.randrange(len(catalog.SUBJECTS))]
            if workload == "MicrosoftTeams":
                name = f"Chat message: {name}"
            url = f"<{r.getrandbits(64):016x}@{self.domain.split('.')[0]}.prod.outlook.com>"
            recipients = tuple(
                r.choice(catalog.EXTERNAL) if r.random() < 0.6 else self.users[r.randrange(len(self.users))].upn
                for _ in range(1 + r.randrange(3))
            )
        elif workload == "SharePoint":
            name = f"{stem}{ext}"
            site = r.choice(("Finance", "HR", "Sales", "Legal"))
            url = f"https://{self.domain.split('.')[0]}.sharepoint.com/sites/{site}/Shared Documents/{name}"
        elif workload == "OneDrive":
            name = f"{stem}{ext}"
            slug = user.upn.replace("@", "_").replace(".", "_")
            url = f"https://{self.domain.split('.')[0]}-my.sharepoint.com/personal/{slug}/Documents/{name}"
        else:
            name = f"{stem}{ext}"
            url = f"C:\\Users\\{alias}\\Documents\\{name}"
        label = (
            policy.label
            if policy.label is not None
            else (r.randrange(len(catalog.LABELS)) if r.random() < 0.4 else None)
        )
        backdated = (
            self.faults.out_of_order_rate > 0 and rng(self.seed, "ooo", i).random() < self.faults.out_of_order_rate
        )
        t = self.t0 + (i + u_time) * self.step
        if backdated:
            t -= 3600 * (1 + rng(self.seed, "ooo-h", i).randrange(72))
        return Facts(
            index=i,
            id=record_id,
            time=t,
            workload=workload,
            user=user,
            policy=policy,
            rule=rule,
            policy_id=self.policy_ids[policy.key],
            rule_id=self.rule_ids[rule.key],
            sits=sits,
            operation=operation,
            exception=exception,
            justification=justification,
            object_name=name,
            object_url=url,
            recipients=recipients,
            label=label,
            incident_guid=guid(r),
            malformed=self.is_malformed(i),
            backdated=backdated,
            extra=r.getrandbits(32),
        )

    def record_id(self, i: int) -> str:
        """Record ``i``'s ``Id`` without building the record (cheap, for ground truth)."""
        r = rng(self.seed, "a", i)
        r.random(), r.random()
        return guid(r)

    def record(self, i: int, detections: bool = False) -> dict[str, Any]:
        """Audit record ``i`` as the Management Activity API serves it.

        ``detections``: include matched values (DLP.All with ActivityFeed.ReadDlp).
        A malformed record keeps its ``Id`` but has a wrong shape (see ``expected_malformed_ids``).
        """
        f = self.facts(i)
        if f.malformed:
            return {
                "Id": f.id,
                "RecordType": "ComplianceDLP?",
                "CreationTime": "not-a-time",
                "Operation": "DlpRuleMatch",
                "OrganizationId": self.tenant_id,
                "PolicyDetails": "<truncated by fault injection>",
                "Workload": f.workload,
            }
        return self._endpoint_record(f) if f.workload == "Endpoint" else self._dlp_record(f, detections)

    def _common(self, f: Facts, record_type: int) -> dict[str, Any]:
        rt: int | str = record_type
        if f.extra % 50 == 0:  # a few records carry numbers as strings, as some pipelines deliver them
            rt = str(record_type)
        return {
            "CreationTime": mgmt_time(f.time),
            "Id": f.id,
            "Operation": f.operation,
            "OrganizationId": self.tenant_id,
            "RecordType": rt,
            "UserKey": "",
            "UserType": 4,
            "Version": 1,
            "Workload": f.workload,
            "ObjectId": f.object_url,
            "UserId": "",
        }

    def _sensitive_information(self, f: Facts, detections: bool, location: str) -> list[dict[str, Any]]:
        out = []
        for sit_index, count, confidence in f.sits:
            sit = catalog.SITS[sit_index]
            item: dict[str, Any] = {
                "ClassifierType": "Content",
                "Confidence": confidence,
                "Count": count,
                "Location": location,
                "SensitiveInformationDetailedClassificationAttributes": [
                    {"Confidence": level, "Count": count, "IsMatch": confidence >= level} for level in (65, 75, 85)
                ],
                "SensitiveInformationTypeName": sit.name,
                "SensitiveType": sit.id,
                "UniqueCount": max(1, count - (f.extra % 3)),
            }
            if detections:
                values = [
                    {"Name": sit.name, "Value": sit.samples[(f.extra + k) % len(sit.samples)]}
                    for k in range(min(count, 5))
                ]
                item["SensitiveInformationDetections"] = {"DetectedValues": values, "ResultsTruncated": count > 5}
            out.append(item)
        return out

    def _policy_details(self, f: Facts, detections: bool, location: str) -> list[dict[str, Any]]:
        actions = ["GenerateAlert", "GenerateIncidentReport", "NotifyUser"]
        if f.rule.block:
            actions.insert(0, "BlockAccess")
        other: list[dict[str, str]] = []
        if f.label is not None:
            other.append({"Name": "SensitivityLabels", "Value": catalog.LABELS[f.label].id})
        if f.workload in ("SharePoint", "OneDrive") and f.extra % 4 == 0:
            other.append({"Name": "AccessScope", "Value": "IncludeExternalUsers"})
        rule: dict[str, Any] = {
            "ActionParameters": ["GenerateAlert:true", f"GenerateIncidentReport:admin@{self.domain}"],
            "Actions": actions if f.operation != "DlpInfo" else [],
            "ConditionsMatched": {
                "ConditionMatchedInNewScheme": True,
                "OtherConditions": other,
                "SensitiveInformation": self._sensitive_information(f, detections, location),
            },
            "ManagementRuleId": name_guid(f"mgmt/{f.rule_id}"),
            "RuleId": f.rule_id,
            "RuleMode": "Enable",
            "RuleName": f.rule.name,
            "Severity": f.rule.severity,
        }
        if f.operation == "DlpRuleUndo":
            rule["OverriddenActions"] = actions
            rule["Actions"] = []
        return [{"PolicyId": f.policy_id, "PolicyName": f.policy.name, "Rules": [rule]}]

    def _exception_info(self, f: Facts) -> Any:
        if f.exception == "override":
            text = orjson.dumps(
                {"Reason": "Override", "Justification": f.justification, "FalsePositive": False, "Rules": [f.rule_id]}
            ).decode()
            return text  # Exchange delivers a JSON-encoded string
        if f.exception == "undo":
            return {"Reason": "Override", "Justification": f.justification, "Rules": [f.rule_id]}
        if f.exception == "falsepositive":
            return {"FalsePositive": True, "Reason": "", "Rules": [f.rule_id]}
        return None

    def _dlp_record(self, f: Facts, detections: bool) -> dict[str, Any]:
        exchange = f.workload in ("Exchange", "MicrosoftTeams")
        rec = self._common(f, 13 if exchange else 11)
        if exchange:
            rec["UserId"] = f.user.upn
            rec["UserKey"] = f.user.puid
            rec["UserType"] = 0
            attachment = f.extra % 2 == 0 and f.workload == "Exchange"
            location = f.object_name.split(":")[-1].strip() + ".xlsx" if attachment else "Message Body"
            rec["ExchangeMetaData"] = {
                "BCC": [],
                "CC": list(f.recipients[1:2]),
                "FileSize": 2048 + f.extra % 900_000,
                "From": f.user.upn,
                "MessageID": f.object_url,
                "RecipientCount": len(f.recipients),
                "Sent": mgmt_time(f.time - 2),
                "Subject": f.object_name,
                "To": list(f.recipients[:1]),
                "UniqueID": name_guid(f.object_url),
            }
        else:
            agent = (
                "DlpPolicyEventBasedAssistantOneDriveForBusiness"
                if f.workload == "OneDrive"
                else "DlpPolicyEventBasedAssistantSharePoint"
            )
            rec["UserId"] = agent
            rec["UserKey"] = agent
            location = f.object_name
            site = f.object_url.rsplit("/", 2)[0]
            meta: dict[str, Any] = {
                "From": f.user.upn,
                "FileID": f.object_url,
                "FileName": f.object_name,
                "FileOwner": f.user.display,
                "FilePathUrl": f.object_url,
                "FileSize": 4096 + f.extra % 5_000_000,
                "IsViewableByExternalUsers": f.extra % 4 == 0,
                "IsVisibleOnlyToOdbOwner": f.workload == "OneDrive" and f.extra % 3 == 0,
                "ItemCreationTime": mgmt_time(f.time - 86400 * (1 + f.extra % 30)),
                "ItemLastModifiedTime": mgmt_time(f.time - 60),
                "ItemLastSharedTime": mgmt_time(f.time - 30),
                "SensitivityLabelIds": [catalog.LABELS[f.label].id] if f.label is not None else [],
                "SharedBy": f.user.upn if f.extra % 4 == 0 else "",
                "SiteAdmin": [f"admin@{self.domain}"],
                "SiteCollectionGuid": name_guid(site),
                "SiteCollectionUrl": site,
                "UniqueID": name_guid(f.object_url),
            }
            if f.extra % 5 == 0:  # the casing the schema page uses
                meta["itemCreationTime"] = meta.pop("ItemCreationTime")
                meta["UniqueId"] = meta.pop("UniqueID")
            rec["SharePointMetaData"] = meta
        rec["IncidentId"] = f.incident_guid
        rec["PolicyDetails"] = self._policy_details(f, detections, location)
        rec["SensitiveInfoDetectionIsIncluded"] = detections
        info = self._exception_info(f)
        if info is not None:
            rec["ExceptionInfo"] = info
        return rec

    def _endpoint_record(self, f: Facts) -> dict[str, Any]:
        rec = self._common(f, 63)
        op = next(o for o in catalog.ENDPOINT_OPERATIONS if o[0] == f.operation)
        rec.update(
            {
                "UserId": f.user.upn,
                "UserKey": f.user.object_id,
                "UserType": 0,
                "ClientIP": f.user.ip,
                "Scope": 0,
                "DeviceName": f"{f.user.device}.{self.domain}",
                "MDATPDeviceId": f.user.device_id,
                "Platform": 1,
                "Application": op[2],
                "FileExtension": f.object_name.rsplit(".", 1)[-1],
                "FileSize": 4096 + f.extra % 5_000_000,
                "FileType": f.object_name.rsplit(".", 1)[-1].upper(),
                "Hidden": False,
                "SourceLocationType": 1,
                "DestinationLocationType": op[1],
                "EnforcementMode": 3 if f.rule.block else 1,
                "RMSEncrypted": False,
                "JitTriggered": False,
                "Sha1": f"{f.extra:08x}" * 5,
                "Sha256": f"{f.extra:08x}" * 8,
                "PolicyMatchInfo": {
                    "PolicyId": f.policy_id,
                    "PolicyName": f.policy.name,
                    "RuleId": f.rule_id,
                    "RuleName": f.rule.name,
                },
                "SensitiveInfoTypeData": [
                    {
                        "SensitiveInfoTypeId": catalog.SITS[s].id,
                        "SensitiveInfoTypeName": catalog.SITS[s].name,
                        "Count": count,
                        "Confidence": confidence,
                    }
                    for s, count, confidence in f.sits
                ],
            }
        )
        if f.label is not None:
            rec["SensitivityLabelEventData"] = {"SensitivityLabelId": catalog.LABELS[f.label].id}
        if op[1] == "RemovableMedia":
            rec["RemovableMediaDeviceAttributes"] = {
                "Manufacturer": "SanDisk",
                "Model": "Ultra USB 3.0",
                "SerialNumber": f"{f.extra:010d}",
            }
            rec["TargetFilePath"] = f"E:\\{f.object_name}"
        elif op[1] == "CloudService":
            rec["TargetDomain"] = "drive.google.com"
        elif op[1] == "Printer":
            rec["TargetPrinterName"] = "HP LaserJet 4th floor"
        elif op[1] == "NetworkShare":
            rec["TargetFilePath"] = f"\\\\fileserver01\\share\\{f.object_name}"
        if f.exception == "override":
            rec["ExceptionInfo"] = {"Reason": "Override", "Justification": f.justification, "Rules": [f.rule_id]}
        return rec

    # ------------------------------------------------------------------ content blobs
    def blob(self, content_type: str, k: int) -> Blob | None:
        """Blob ``k`` of a feed, or None if out of range (it may still hold no record of the feed)."""
        if not 0 <= k < self.blob_count or content_type not in CONTENT_TYPES:
            return None
        first = k * self.blob_size
        last = min(self.n, first + self.blob_size)
        r = rng(self.seed, "blob", k)
        created = self.t0 + last * self.step + self.config.blob_latency * (0.2 + 0.8 * r.random())
        late = self.faults.late_rate > 0 and rng(self.seed, "late", k).random() < self.faults.late_rate
        visible = created + (self.faults.late_delay if late else 0.0)
        dups: tuple[int, ...] = ()
        if k > 0 and self.faults.duplicate_rate > 0:
            d = rng(self.seed, "dup", k)
            if d.random() < self.faults.duplicate_rate:
                prev_first = (k - 1) * self.blob_size
                dups = tuple(sorted(d.sample(range(prev_first, first), min(3, first - prev_first))))
        return Blob(content_type, k, created, visible, first, last, late, dups)

    def blob_indices(self, blob: Blob) -> list[int]:
        """Record indices in the blob (its own records of the feed, then the repeated ones)."""
        ct = blob.content_type
        own = [i for i in range(blob.first, blob.last) if self.in_feed(i, ct)]
        return own + [i for i in blob.duplicates if self.in_feed(i, ct)]

    def blobs_created_between(self, content_type: str, start: float, end: float) -> Iterator[Blob]:
        """Blobs of the feed with ``start <= created < end`` in creation order (visibility not checked)."""
        if self.blob_count == 0:
            return
        per_blob = self.blob_size * self.step
        lat = self.config.blob_latency
        lo = max(0, int((start - lat - self.t0) / per_blob) - 2)
        hi = min(self.blob_count, int((end - self.t0) / per_blob) + 2)
        for k in range(lo, hi):
            b = self.blob(content_type, k)
            if b is not None and start <= b.created < end:
                yield b

    # ------------------------------------------------------------------ what exists at a time
    def _count_until(self, count: int, first_time: Callable[[int], float], now: float) -> int:
        """How many of items ``0..count-1`` (times increasing) have ``first_time(i) <= now``."""
        lo, hi = 0, count
        while lo < hi:
            mid = (lo + hi) // 2
            if first_time(mid) <= now:
                lo = mid + 1
            else:
                hi = mid
        return lo

    def alerts_until(self, now: float) -> int:
        """Alerts created at or before ``now`` (nothing exists before it happened)."""
        return self._count_until(self.alert_count, lambda j: self.alert_times(j)[0], now)

    def incidents_until(self, now: float) -> int:
        """Incidents whose every alert exists at ``now``."""
        return self._count_until(self.incident_count, lambda m: self.incident_times(m)[1], now)

    def blobs_until(self, now: float) -> int:
        """An upper bound of the blob indices created at or before ``now``."""
        per_blob = self.blob_size * self.step
        return max(0, min(self.blob_count, int((now - self.t0) / per_blob) + 2))

    # ------------------------------------------------------------------ Graph alerts
    def alert_record_index(self, j: int) -> int:
        """The audit record alert ``j`` is about: one in the first half of its slot of K records."""
        return j * self.alert_every + rng(self.seed, "al", j).randrange(max(1, self.alert_every // 2))

    def alert_times(self, j: int) -> tuple[float, float]:
        """(createdDateTime, lastUpdateDateTime) of alert ``j``: both strictly increasing in ``j``,
        after its record (for ``alert_every`` >= 2) and never after the data set's anchor."""
        r = rng(self.seed, "alt", j)
        created = self.t0 + (j + 0.6 + 0.2 * r.random()) * self.astep
        updated = created + 0.19 * r.random() * self.astep
        return _microseconds(created), _microseconds(updated)

    def alert_id(self, j: int) -> str:
        r = rng(self.seed, "aid", j)
        if self.is_defender_alert(j):
            return f"da{638000000000000000 + r.getrandbits(48)}_{-r.getrandbits(31)}"
        return f"dl{guid(r).replace('-', '')[:30]}"

    def alert_index_of(self, alert_id: str) -> int | None:
        """Inverse of :meth:`alert_id` (ids embed no index, so a lookup table is built lazily)."""
        if not hasattr(self, "_alert_ids"):
            self._alert_ids = {self.alert_id(j): j for j in range(self.alert_count)}
        return self._alert_ids.get(alert_id)

    @staticmethod
    def is_defender_alert(j: int) -> bool:
        return j % 7 == 6

    def incident_of_alert(self, j: int) -> int:
        return j // self.per_incident

    def incident_id(self, m: int) -> str:
        return str(2000 + m)

    def alert(self, j: int) -> dict[str, Any]:
        """Alert ``j`` as Graph ``alerts_v2`` serves it."""
        f = self.facts(self.alert_record_index(j))
        created, updated = self.alert_times(j)
        aid = self.alert_id(j)
        inc = self.incident_id(self.incident_of_alert(j))
        portal = "https://security.microsoft.com"
        user_ev = {
            "@odata.type": "#microsoft.graph.security.userEvidence",
            "createdDateTime": graph_time(created),
            "verdict": "unknown",
            "remediationStatus": "none",
            "remediationStatusDetails": None,
            "roles": [] if self.is_defender_alert(j) else ["policyViolator"],
            "detailedRoles": [],
            "tags": [],
            "userAccount": {
                "accountName": f.user.upn.split("@")[0],
                "domainName": self.domain,
                "userSid": f.user.sid,
                "azureAdUserId": f.user.object_id,
                "userPrincipalName": f.user.upn,
                "displayName": f.user.display,
            },
        }
        evidence: list[dict[str, Any]] = [user_ev]
        if self.is_defender_alert(j):
            title, service, detection, category, technique = catalog.DEFENDER_ALERTS[
                rng(self.seed, "def", j).randrange(len(catalog.DEFENDER_ALERTS))
            ]
            severity = ("low", "medium", "high")[rng(self.seed, "sev", j).randrange(3)]
            description = f"{title} by {f.user.display} ({f.user.upn})."
            detector = str(uuid.uuid5(uuid.NAMESPACE_URL, f"detector/{title}"))
            techniques = [technique]
            evidence.append(self._device_evidence(f, created))
            recommended = "Review the user's recent activity and contain the device if needed."
        else:
            service, detection, category, techniques = (
                "dataLossPrevention",
                "microsoftDataLossPrevention",
                "Exfiltration",
                [],
            )
            where = {"MicrosoftTeams": "Teams chat", "Endpoint": "an endpoint"}.get(f.workload, f.workload)
            if f.workload in ("Exchange", "MicrosoftTeams"):
                title = f"DLP policy match for email with subject '{f.object_name}'"
                if f.workload == "MicrosoftTeams":
                    title = f"DLP policy match for message in {where}"
            else:
                title = f"DLP policy match for document '{f.object_name}' in {where}"
            severity = f.rule.severity.lower()
            description = (
                f"Policy '{f.policy.name}', rule '{f.rule.name}' matched "
                f"{', '.join(catalog.SITS[s].name for s, _, _ in f.sits)} in content from {f.user.upn}."
            )
            detector = f.rule_id
            recommended = "Review the matched content and the user's justification in the Purview DLP alerts page."
            if f.workload == "Endpoint":
                evidence.append(self._device_evidence(f, created))
            if f.workload in ("Exchange", "MicrosoftTeams"):
                evidence.append(
                    {
                        "@odata.type": "#microsoft.graph.security.analyzedMessageEvidence",
                        "createdDateTime": graph_time(created),
                        "verdict": "unknown",
                        "remediationStatus": "none",
                        "remediationStatusDetails": None,
                        "roles": [],
                        "detailedRoles": [],
                        "tags": [],
                        "internetMessageId": f.object_url,
                        "subject": f.object_name,
                        "senderIp": None,
                        "recipientEmailAddress": f.recipients[0] if f.recipients else None,
                        "p1Sender": {"emailAddress": f.user.upn, "displayName": f.user.display},
                        "p2Sender": {"emailAddress": f.user.upn, "displayName": f.user.display},
                        "networkMessageId": name_guid(f.object_url),
                        "deliveryAction": "blocked" if f.rule.block else "delivered",
                    }
                )
            else:
                evidence.append(
                    {
                        "@odata.type": "#microsoft.graph.security.fileEvidence",
                        "createdDateTime": graph_time(created),
                        "verdict": "unknown",
                        "remediationStatus": "blocked" if f.rule.block else "none",
                        "remediationStatusDetails": None,
                        "roles": [],
                        "detailedRoles": [],
                        "tags": [],
                        "detectionStatus": "blocked" if f.rule.block else "detected",
                        "mdeDeviceId": f.user.device_id if f.workload == "Endpoint" else None,
                        "fileDetails": {
                            "sha1": f"{f.extra:08x}" * 5,
                            "sha256": f"{f.extra:08x}" * 8,
                            "fileName": f.object_name,
                            "filePath": f.object_url.rsplit("/", 1)[0].rsplit("\\", 1)[0],
                            "fileSize": 4096 + f.extra % 5_000_000,
                            "filePublisher": None,
                            "signer": None,
                            "issuer": None,
                        },
                    }
                )
        return {
            "@odata.type": "#microsoft.graph.security.alert",
            "id": aid,
            "providerAlertId": str(uuid.uuid5(uuid.NAMESPACE_URL, aid)),
            "incidentId": inc,
            "status": "new",
            "severity": severity,
            "classification": None,
            "determination": None,
            "serviceSource": service,
            "detectionSource": detection,
            "detectorId": detector,
            "tenantId": self.tenant_id,
            "title": title,
            "description": description,
            "recommendedActions": recommended,
            "category": category,
            "assignedTo": None,
            "alertWebUrl": f"{portal}/alerts/{aid}?tid={self.tenant_id}",
            "incidentWebUrl": f"{portal}/incidents/{inc}?tid={self.tenant_id}",
            "actorDisplayName": None,
            "threatDisplayName": None,
            "threatFamilyName": None,
            "mitreTechniques": techniques,
            "createdDateTime": graph_time(created),
            "lastUpdateDateTime": graph_time(updated),
            "resolvedDateTime": None,
            "firstActivityDateTime": graph_time(f.time),
            "lastActivityDateTime": graph_time(f.time),
            "comments": [],
            "evidence": evidence,
            "systemTags": [],
        }

    def _device_evidence(self, f: Facts, created: float) -> dict[str, Any]:
        return {
            "@odata.type": "#microsoft.graph.security.deviceEvidence",
            "createdDateTime": graph_time(created),
            "verdict": "unknown",
            "remediationStatus": "none",
            "remediationStatusDetails": None,
            "roles": [],
            "detailedRoles": [],
            "tags": [],
            "mdeDeviceId": f.user.device_id,
            "azureAdDeviceId": f.user.aad_device_id,
            "deviceDnsName": f"{f.user.device.lower()}.{self.domain}",
            "osPlatform": "Windows11",
            "osBuild": 22631,
            "healthStatus": "active",
            "riskScore": "low",
            "rbacGroupId": 0,
            "rbacGroupName": None,
            "onboardingStatus": "onboarded",
            "defenderAvStatus": "updated",
            "ipInterfaces": [f.user.ip],
            "loggedOnUsers": [
                {"accountName": f.user.upn.split("@")[0], "domainName": self.domain.split(".")[0].upper()}
            ],
            "vmMetadata": None,
        }

    # ------------------------------------------------------------------ Graph incidents
    def incident_alerts(self, m: int) -> range:
        return range(m * self.per_incident, min(self.alert_count, (m + 1) * self.per_incident))

    def incident_times(self, m: int) -> tuple[float, float]:
        js = self.incident_alerts(m)
        return self.alert_times(js[0])[0], self.alert_times(js[-1])[1]

    def incident(self, m: int) -> dict[str, Any]:
        js = self.incident_alerts(m)
        first = self.alert(js[0])
        created, updated = self.incident_times(m)
        severities = ["informational", "low", "medium", "high"]
        sev = max((self.alert(j)["severity"] for j in js), key=lambda s: severities.index(s) if s in severities else 0)
        user = first["evidence"][0]["userAccount"]["displayName"]
        iid = self.incident_id(m)
        name = (
            f"{first['title']} involving one user"
            if len(js) == 1
            else f"Multiple alerts involving {user}: {first['title']}"
        )
        return {
            "@odata.type": "#microsoft.graph.security.incident",
            "id": iid,
            "tenantId": self.tenant_id,
            "status": "active",
            "incidentWebUrl": f"https://security.microsoft.com/incidents/{iid}?tid={self.tenant_id}",
            "redirectIncidentId": None,
            "displayName": name,
            "createdDateTime": graph_time(created),
            "lastUpdateDateTime": graph_time(updated),
            "assignedTo": None,
            "classification": "unknown",
            "determination": "unknown",
            "severity": sev,
            "customTags": [],
            "systemTags": [],
            "description": f"Incident with {len(js)} alert(s) for {user}.",
            "comments": [],
        }
