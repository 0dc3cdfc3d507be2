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
* alert ``j`` is a DLP alert about audit record ``j*K + r`` (``K = alert_every``), except every
  7th (``j % 7 == 6``): a non-DLP Defender alert (Endpoint, Office 365, Identity, Cloud Apps,
  Cloud) with the evidence that service reports. Of every five of those, three are
  *correlated* (about a DLP record's user, device, file or message, minutes to hours after it)
  and two are *decoys* (``j % 35`` in 13 and 27: a user without DLP activity within two hours,
  files and messages no DLP event has, an incident of their own) that must link to nothing;
* incidents group consecutive alerts ``alerts_per_incident`` at a time, a decoy alone;
* :meth:`Dataset.expected_links` is the ground truth of correlation (:mod:`emulators.tenant.truth`).
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

#: Non-DLP alerts are ``j % 7 == 6``; in every ALERT_PERIOD alerts the non-DLP ones at these
#: offsets are decoys (two of five), the others correlated.
ALERT_PERIOD = 35
DECOY_SLOTS = (13, 27)
#: Services of the correlated alerts, in turn.
_CORRELATED_KINDS = ("mde", "mdo", "mdi", "mde", "mdca", "mdo", "mdi", "mdc")
_DECOY_KINDS = ("mde", "mdo", "mdi")
#: A decoy's user has no DLP activity within this many seconds of it (rules: 30 and 60 minutes).
DECOY_QUIET = 2 * 3600.0


def _incident_layout(per_incident: int) -> list[tuple[int, int]]:
    """[start, end) offsets of the incidents within one ALERT_PERIOD of alerts: runs between
    decoys chunked ``per_incident`` at a time, each decoy an incident of its own."""
    cuts = sorted({0, ALERT_PERIOD, *DECOY_SLOTS, *(d + 1 for d in DECOY_SLOTS)})
    out: list[tuple[int, int]] = []
    for lo, hi in zip(cuts, cuts[1:], strict=False):
        out.extend((s, min(hi, s + per_incident)) for s in range(lo, hi, per_incident))
    return out


@dataclass(frozen=True)
class DefenderSpec:
    """What a non-DLP alert is about; its evidence and its correlation keys both come from it."""

    j: int
    role: str  # "correlated" | "decoy"
    kind: str  # mde | mdo | mdi | mdca | mdc
    catalog: tuple[str, str, str, str, str]  # title, serviceSource, detectionSource, category, technique
    record: int  # the DLP record it is about (correlated) or whose user it concerns (decoy)
    user: User
    activity: float  # firstActivityDateTime
    late: bool  # created an hour or more after its DLP record
    device: bool  # deviceEvidence of the user's device
    ip: bool  # ipEvidence of the user's address
    file: tuple[str, str, str, str] | None  # fileName, filePath, sha1, sha256
    message: tuple[str, str, str, str] | None  # internetMessageId, subject, sender, recipient
    url: str  # urlEvidence


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
        self._incident_layout = _incident_layout(self.per_incident)
        full, rest = divmod(self.alert_count, ALERT_PERIOD)
        self.incident_count = full * len(self._incident_layout) + sum(
            1 for start, _ in self._incident_layout if start < rest
        )
        self._specs: dict[int, DefenderSpec] = {}
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
        """The audit record alert ``j`` is about: for a DLP alert, one in the first half of its
        slot of K records; for a non-DLP alert, see :meth:`defender_spec`."""
        if self.is_defender_alert(j):
            return self.defender_spec(j).record
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

    @staticmethod
    def alert_role(j: int) -> str:
        """``"dlp"``, ``"correlated"`` (a non-DLP alert that must link to its DLP record) or
        ``"decoy"`` (a non-DLP alert that must link to nothing)."""
        if j % 7 != 6:
            return "dlp"
        return "decoy" if j % ALERT_PERIOD in DECOY_SLOTS else "correlated"

    def incident_of_alert(self, j: int) -> int:
        period, offset = divmod(j, ALERT_PERIOD)
        layout = self._incident_layout
        k = next(n for n, (start, end) in enumerate(layout) if start <= offset < end)
        return period * len(layout) + k

    def incident_id(self, m: int) -> str:
        return str(2000 + m)

    # ------------------------------------------------------------------ non-DLP (Defender) alerts
    def defender_spec(self, j: int) -> DefenderSpec:
        """What non-DLP alert ``j`` is about (cached: a decoy's user takes a search)."""
        spec = self._specs.get(j)
        if spec is None:
            spec = self._decoy_spec(j) if self.alert_role(j) == "decoy" else self._correlated_spec(j)
            self._specs[j] = spec
        return spec

    def _correlated_spec(self, j: int) -> DefenderSpec:
        """About the DLP record that happened ``lag`` before the alert was created: minutes
        (the alert usually arrives before the record, whose Management API blob is later) or
        one to four hours (the alert arrives well after it)."""
        r = rng(self.seed, "corr", j)
        created = self.alert_times(j)[0]
        late = r.random() < 0.4
        lag = (65 + 175 * r.random()) * 60 if late else (3 + 22 * r.random()) * 60
        i = min(max(0, int((created - lag - self.t0) / self.step) - 1), max(0, self.n - 1))
        f = self.facts(i)
        q = j // 7
        kind = _CORRELATED_KINDS[((q // 5) * 3 + (q % 5) // 2) % len(_CORRELATED_KINDS)]
        device = ip = False
        file: tuple[str, str, str, str] | None = None
        message: tuple[str, str, str, str] | None = None
        url = ""
        alias = f.user.upn.split("@")[0]
        if kind == "mde":
            entry = catalog.MDE_ALERTS[r.randrange(len(catalog.MDE_ALERTS))]
            offset = 90 * r.random()
            device = True
            if f.workload not in ("Exchange", "MicrosoftTeams"):  # the file of the DLP match
                folder = f"C:\\Users\\{alias}\\" + ("Documents" if f.workload == "Endpoint" else "Downloads")
                file = (f.object_name, folder, f"{f.extra:08x}" * 5, f"{f.extra:08x}" * 8)
        elif kind == "mdo":
            if f.workload == "Exchange":  # the very message the DLP rule matched, sent by the user
                entry = catalog.MDO_OUTBOUND_ALERTS[r.randrange(len(catalog.MDO_OUTBOUND_ALERTS))]
                recipient = f.recipients[0] if f.recipients else catalog.EXTERNAL[0]
                message = (f.object_url, f.object_name, f.user.upn, recipient)
                offset = 600 * r.random()
            else:  # a phishing message the user received around the DLP match
                entry = catalog.MDO_INBOUND_ALERTS[r.randrange(len(catalog.MDO_INBOUND_ALERTS))]
                message = self._phish(r, f.user.upn)
                url = catalog.PHISH_URLS[r.randrange(len(catalog.PHISH_URLS))]
                offset = (40 * r.random() - 20) * 60
        elif kind == "mdi":
            entry = catalog.MDI_ALERTS[r.randrange(len(catalog.MDI_ALERTS))]
            device = ip = True
            offset = (35 * r.random() - 25) * 60
        elif kind == "mdca":
            entry = catalog.CLOUD_APPS_ALERTS[r.randrange(len(catalog.CLOUD_APPS_ALERTS))]
            offset = 900 * r.random()
        else:
            entry = catalog.CLOUD_ALERTS[r.randrange(len(catalog.CLOUD_ALERTS))]
            offset = 900 * r.random()
        activity = _microseconds(min(f.time + offset, created - 60))
        return DefenderSpec(j, "correlated", kind, entry, i, f.user, activity, late, device, ip, file, message, url)

    def _phish(self, r: random.Random, recipient: str) -> tuple[str, str, str, str]:
        sender = catalog.PHISH_SENDERS[r.randrange(len(catalog.PHISH_SENDERS))]
        msg_id = f"<{r.getrandbits(64):016x}@{sender.split('@')[1]}>"
        return (msg_id, catalog.PHISH_SUBJECTS[r.randrange(len(catalog.PHISH_SUBJECTS))], sender, recipient)

    def _decoy_spec(self, j: int) -> DefenderSpec:
        """A user with no DLP activity within :data:`DECOY_QUIET` of the alert (so no rule can
        link it: user 30 min, device 60 min), a file, message and incident no DLP event has."""
        r = rng(self.seed, "decoy", j)
        created = self.alert_times(j)[0]
        activity = _microseconds(created - (3 + 22 * r.random()) * 60)
        active = self._users_active(activity - DECOY_QUIET, activity + DECOY_QUIET)
        upper = max(1, self.n)
        record = r.randrange(upper)
        for _ in range(64):
            if self.facts(record).user.upn not in active:
                break
            record = r.randrange(upper)
        else:  # every user was busy then: the alert is about activity before the data set began
            activity = _microseconds(self.t0 - 4 * 86400 - DECOY_QUIET)
        user = self.facts(record).user
        kind = _DECOY_KINDS[((j // ALERT_PERIOD) * 2 + DECOY_SLOTS.index(j % ALERT_PERIOD)) % len(_DECOY_KINDS)]
        device = ip = False
        file: tuple[str, str, str, str] | None = None
        message: tuple[str, str, str, str] | None = None
        url = ""
        if kind == "mde":
            entry = catalog.MDE_ALERTS[r.randrange(len(catalog.MDE_ALERTS))]
            device = True
            name = catalog.DECOY_FILES[r.randrange(len(catalog.DECOY_FILES))]
            folder = f"C:\\Users\\{user.upn.split('@')[0]}\\AppData\\Local\\Temp"
            file = (name, folder, f"{r.getrandbits(160):040x}", f"{r.getrandbits(256):064x}")
        elif kind == "mdo":
            entry = catalog.MDO_INBOUND_ALERTS[r.randrange(len(catalog.MDO_INBOUND_ALERTS))]
            message = self._phish(r, user.upn)
            url = catalog.PHISH_URLS[r.randrange(len(catalog.PHISH_URLS))]
        else:
            entry = catalog.MDI_ALERTS[r.randrange(len(catalog.MDI_ALERTS))]
            device = ip = True
        return DefenderSpec(j, "decoy", kind, entry, record, user, activity, False, device, ip, file, message, url)

    def _users_active(self, lo: float, hi: float) -> set[str]:
        """UPNs of the records (hence also the DLP alerts) whose time is within [lo, hi],
        backdated records (out-of-order fault) included."""
        first = max(0, int((lo - self.t0) / self.step) - 1)
        last = min(self.n, int((hi - self.t0) / self.step) + 2)
        users = {self.facts(i).user.upn for i in range(first, last) if lo <= self.facts(i).time <= hi}
        if self.faults.out_of_order_rate > 0:  # a later record moved up to 72 h back
            late_last = min(self.n, int((hi + 73 * 3600 - self.t0) / self.step) + 2)
            rate = self.faults.out_of_order_rate
            for i in range(last, late_last):
                if rng(self.seed, "ooo", i).random() < rate:
                    f = self.facts(i)
                    if lo <= f.time <= hi:
                        users.add(f.user.upn)
        return users

    def _defender_evidence(self, spec: DefenderSpec, created: float) -> list[dict[str, Any]]:
        user = spec.user
        base: dict[str, Any] = {
            "createdDateTime": graph_time(created),
            "verdict": "suspicious",
            "remediationStatus": "none",
            "remediationStatusDetails": None,
            "detailedRoles": [],
            "tags": [],
        }
        account = self._user_account(user)
        out: list[dict[str, Any]] = []
        if spec.kind == "mdo":
            out.append(
                {
                    "@odata.type": "#microsoft.graph.security.mailboxEvidence",
                    **base,
                    "roles": ["compromised"] if spec.message and spec.message[2] == user.upn else ["attacked"],
                    "displayName": user.display,
                    "primaryAddress": user.upn,
                    "upn": user.upn,
                    "userAccount": account,
                }
            )
        else:
            roles = ["compromised"] if spec.kind == "mdi" else []
            out.append({"@odata.type": "#microsoft.graph.security.userEvidence", **base, "roles": roles,
                        "userAccount": account, "stream": None})  # fmt: skip
        if spec.device:
            out.append(self._device_evidence(user, created))
        if spec.ip:
            out.append(
                {
                    "@odata.type": "#microsoft.graph.security.ipEvidence",
                    **base,
                    "roles": ["source"],
                    "ipAddress": user.ip,
                    "countryLetterCode": None,
                    "location": None,
                    "stream": None,
                }
            )
        if spec.file is not None:
            name, folder, sha1, sha256 = spec.file
            out.append(
                {
                    "@odata.type": "#microsoft.graph.security.fileEvidence",
                    **base,
                    "roles": [],
                    "detectionStatus": "detected",
                    "mdeDeviceId": user.device_id,
                    "fileDetails": {
                        "sha1": sha1,
                        "sha256": sha256,
                        "fileName": name,
                        "filePath": folder,
                        "fileSize": 4096 + int(sha1[:6], 16) % 5_000_000,
                        "filePublisher": None,
                        "signer": None,
                        "issuer": None,
                    },
                }
            )
        if spec.message is not None:
            msg_id, subject, sender, recipient = spec.message
            inbound = sender != user.upn
            out.append(
                {
                    "@odata.type": "#microsoft.graph.security.analyzedMessageEvidence",
                    **base,
                    "roles": [],
                    "internetMessageId": msg_id,
                    "networkMessageId": name_guid(msg_id),
                    "subject": subject,
                    "senderIp": "203.0.113." + str(1 + int(name_guid(sender)[:2], 16) % 250) if inbound else user.ip,
                    "recipientEmailAddress": recipient,
                    "p1Sender": {"emailAddress": sender, "displayName": None, "domainName": sender.split("@")[1]},
                    "p2Sender": {"emailAddress": sender, "displayName": None, "domainName": sender.split("@")[1]},
                    "antiSpamDirection": "inbound" if inbound else "outbound",
                    "deliveryAction": "delivered",
                    "deliveryLocation": "inbox" if inbound else "unknown",
                    "urlCount": 1 if spec.url else 0,
                    "urls": [spec.url] if spec.url else [],
                    "threats": ["Phish"] if inbound else [],
                }
            )
        if spec.url:
            out.append({"@odata.type": "#microsoft.graph.security.urlEvidence", **base, "roles": [], "url": spec.url})
        if spec.kind in ("mdca", "mdc"):
            app = "Microsoft SharePoint Online" if spec.kind == "mdca" else "Azure Storage"
            out.append(
                {
                    "@odata.type": "#microsoft.graph.security.cloudApplicationEvidence",
                    **base,
                    "roles": [],
                    "appId": 20892 if spec.kind == "mdca" else 0,
                    "displayName": app,
                    "instanceId": 0,
                    "instanceName": app,
                    "saasAppId": 20892 if spec.kind == "mdca" else 0,
                    "stream": None,
                }
            )
        return out

    def _user_account(self, user: User) -> dict[str, Any]:
        return {
            "accountName": user.upn.split("@")[0],
            "domainName": self.domain,
            "userSid": user.sid,
            "azureAdUserId": user.object_id,
            "userPrincipalName": user.upn,
            "displayName": user.display,
        }

    def alert(self, j: int) -> dict[str, Any]:
        """Alert ``j`` as Graph ``alerts_v2`` serves it."""
        created, updated = self.alert_times(j)
        aid = self.alert_id(j)
        inc = self.incident_id(self.incident_of_alert(j))
        portal = "https://security.microsoft.com"
        if self.is_defender_alert(j):
            spec = self.defender_spec(j)
            title, service, detection, category, technique = spec.catalog
            user = spec.user
            severity = ("low", "medium", "high")[rng(self.seed, "sev", j).randrange(3)]
            description = f"{title} by {user.display} ({user.upn})."
            detector = str(uuid.uuid5(uuid.NAMESPACE_URL, f"detector/{title}"))
            techniques = [technique]
            evidence = self._defender_evidence(spec, created)
            recommended = "Review the user's recent activity and contain the device if needed."
            first_activity = spec.activity
        else:
            f = self.facts(self.alert_record_index(j))
            first_activity = f.time
            evidence = [
                {
                    "@odata.type": "#microsoft.graph.security.userEvidence",
                    "createdDateTime": graph_time(created),
                    "verdict": "unknown",
                    "remediationStatus": "none",
                    "remediationStatusDetails": None,
                    "roles": ["policyViolator"],
                    "detailedRoles": [],
                    "tags": [],
                    "userAccount": self._user_account(f.user),
                }
            ]
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
                evidence.append(self._device_evidence(f.user, created))
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
            "firstActivityDateTime": graph_time(first_activity),
            "lastActivityDateTime": graph_time(first_activity),
            "comments": [],
            "evidence": evidence,
            "systemTags": [],
        }

    def _device_evidence(self, user: User, created: float) -> dict[str, Any]:
        return {
            "@odata.type": "#microsoft.graph.security.deviceEvidence",
            "createdDateTime": graph_time(created),
            "verdict": "unknown",
            "remediationStatus": "none",
            "remediationStatusDetails": None,
            "roles": [],
            "detailedRoles": [],
            "tags": [],
            "mdeDeviceId": user.device_id,
            "azureAdDeviceId": user.aad_device_id,
            "deviceDnsName": f"{user.device.lower()}.{self.domain}",
            "osPlatform": "Windows11",
            "osBuild": 22631,
            "healthStatus": "active",
            "riskScore": "low",
            "rbacGroupId": 0,
            "rbacGroupName": None,
            "onboardingStatus": "onboarded",
            "defenderAvStatus": "updated",
            "ipInterfaces": [user.ip],
            "loggedOnUsers": [{"accountName": user.upn.split("@")[0], "domainName": self.domain.split(".")[0].upper()}],
            "vmMetadata": None,
        }

    def expected_links(self, now: float | None = None, windows: dict[str, float] | None = None) -> list[Any]:
        """The ground truth of correlation: every (DLP event id, alert id, reasons) link the
        documented default rules (or ``windows``: rule -> minutes) must find among the records
        and alerts that exist at ``now`` (default: everything). See :mod:`emulators.tenant.truth`."""
        from emulators.tenant.truth import expected_links

        return expected_links(self, now, windows)

    # ------------------------------------------------------------------ Graph incidents
    def incident_alerts(self, m: int) -> range:
        period, k = divmod(m, len(self._incident_layout))
        start, end = self._incident_layout[k]
        base = period * ALERT_PERIOD
        return range(base + start, min(self.alert_count, base + end))

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
