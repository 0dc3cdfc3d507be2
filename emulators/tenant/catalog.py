"""Static reference data the generator draws from: policies, sensitive information types,
sensitivity labels, people, file and message names. Real Microsoft SIT GUIDs and names."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Sit:
    """A sensitive information type (id and name as ``/resources/dlpSensitiveTypes`` lists them)."""

    id: str
    name: str
    samples: tuple[str, ...]


SITS: tuple[Sit, ...] = (
    Sit(
        "50842eb7-edc8-4019-85dd-5a5c1f2bb085",
        "Credit Card Number",
        ("4111 1111 1111 1111", "5500-0000-0000-0004", "340000000000009", "4012888888881881", "6011000990139424"),
    ),
    Sit(
        "a44669fe-0d48-453d-a9b1-2cc83f2cba77",
        "U.S. Social Security Number (SSN)",
        ("078-05-1120", "219-09-9999", "457-55-5462", "123-45-6789"),
    ),
    Sit(
        "e7dc4711-11b7-4cb0-b88b-2c394a771f0e",
        "International Banking Account Number (IBAN)",
        ("GB82 WEST 1234 5698 7654 32", "DE89370400440532013000", "FR1420041010050500013M02606", "NL91ABNA0417164300"),
    ),
    Sit(
        "178ec42a-18b4-47cc-85c7-d62c92fd67f8",
        "U.S. / U.K. Passport Number",
        ("912803456", "C03005988", "505135370"),
    ),
    Sit("cb353f78-2b72-4c3c-8827-92ebe4f69fdf", "ABA Routing Number", ("021000021", "011000015", "122105155")),
    Sit(
        "a2ce32a8-f935-4bb6-8e96-2a5157672e2c",
        "U.S. Bank Account Number",
        ("000123456789", "4099999992", "11223344556"),
    ),
    Sit(
        "16c07343-c26f-49d2-a987-3daf717e94cc",
        "U.K. National Insurance Number (NINO)",
        ("QQ 12 34 56 C", "AB123456C", "JG103759A"),
    ),
)
SIT_BY_ID = {s.id: s for s in SITS}


@dataclass(frozen=True)
class Label:
    id: str
    name: str


LABELS: tuple[Label, ...] = (
    Label("87ba5c36-b7cf-4793-bbc2-bd5b3a9f95ca", "General"),
    Label("f42aa342-8706-4288-bd11-ebb85995028c", "Confidential"),
    Label("9fbde396-1a24-4c79-8edf-9254a0f35055", "Confidential\\All Employees"),
    Label("1ab4ee6b-8e21-4a2f-9e5b-3b4f7c6a9d2e", "Highly Confidential"),
)


@dataclass(frozen=True)
class Rule:
    key: str  # stable suffix for ids
    name: str
    severity: str  # Low / Medium / High
    sits: tuple[int, ...]  # indices into SITS
    min_count: int
    block: bool


@dataclass(frozen=True)
class Policy:
    key: str
    name: str
    rules: tuple[Rule, ...]
    label: int | None = None  # index into LABELS when the policy also matches a label


POLICIES: tuple[Policy, ...] = (
    Policy(
        "usfin",
        "U.S. Financial Data",
        (
            Rule("usfin-low", "Low volume of content detected U.S. Financial Data", "Low", (0, 4, 5), 1, False),
            Rule("usfin-high", "High volume of content detected U.S. Financial Data", "High", (0, 4, 5), 10, True),
        ),
    ),
    Policy(
        "uspii",
        "U.S. Personally Identifiable Information (PII) Data",
        (
            Rule("uspii-low", "Low volume of content detected U.S. PII", "Medium", (1, 3), 1, False),
            Rule("uspii-high", "High volume of content detected U.S. PII", "High", (1, 3), 10, True),
        ),
    ),
    Policy(
        "eufin",
        "EU Financial Data",
        (Rule("eufin-any", "Content contains EU financial data", "Medium", (2, 0), 1, False),),
    ),
    Policy(
        "ukpii",
        "U.K. Personal Data",
        (Rule("ukpii-any", "U.K. NINO or passport shared", "Low", (6, 3), 1, False),),
    ),
    Policy(
        "label",
        "Highly Confidential - external sharing",
        (Rule("label-ext", "Block external sharing of Highly Confidential content", "High", (0, 1), 1, True),),
        label=3,
    ),
)

PEOPLE: tuple[str, ...] = (
    "Adele Vance",
    "Alex Wilber",
    "Megan Bowen",
    "Lee Gu",
    "Nestor Wilke",
    "Patti Fernandez",
    "Pradeep Gupta",
    "Lynne Robbins",
    "Isaiah Langer",
    "Johanna Lorenz",
    "Grady Archie",
    "Miriam Graham",
    "Diego Siciliani",
    "Joni Sherman",
    "Lidia Holloway",
    "Henrietta Mueller",
    "Irvin Sayers",
    "Christie Cline",
    "Debra Berger",
    "Enrico Cattaneo",
)
SURNAMES: tuple[str, ...] = ("Ito", "Okafor", "Novak", "Silva", "Haddad", "Kowalski", "Nguyen", "Larsen", "Moreau")

EXTERNAL: tuple[str, ...] = (
    "j.smith@fabrikam.com",
    "accounts@northwindtraders.com",
    "m.dupont@gmail.com",
    "procurement@tailspintoys.com",
    "hr@wingtiptoys.com",
)

FILE_STEMS: tuple[str, ...] = (
    "Q3 payroll export",
    "Customer list EMEA",
    "Invoice batch 2026-10",
    "Benefits enrollment",
    "Passport scans",
    "Vendor bank details",
    "Board financials draft",
    "HR cases",
    "Wire transfer instructions",
    "Tax forms W-2",
)
FILE_EXTS: tuple[str, ...] = (".xlsx", ".docx", ".pdf", ".csv", ".pptx", ".txt")

SUBJECTS: tuple[str, ...] = (
    "Updated payment details",
    "RE: onboarding documents",
    "Payroll corrections for October",
    "FW: customer refunds",
    "Passport copy for travel booking",
    "Bank account change request",
    "Quarterly close numbers",
)

ENDPOINT_OPERATIONS: tuple[tuple[str, str, str], ...] = (
    # Operation, DestinationLocationType, Application
    ("FileCopiedToRemovableMedia", "RemovableMedia", "explorer.exe"),
    ("FileUploadedToCloud", "CloudService", "chrome.exe"),
    ("FilePrinted", "Printer", "WINWORD.EXE"),
    ("FileCopiedToNetworkShare", "NetworkShare", "explorer.exe"),
    ("FileCopiedToClipboard", "Clipboard", "EXCEL.EXE"),
    ("FileCopiedToRemoteDesktopSession", "RemoteDesktop", "mstsc.exe"),
)

# Non-DLP Defender alerts the generator plants (correlated with a DLP record, or decoys that
# must link to nothing). (title, serviceSource, detectionSource, category, MITRE technique)
MDE_ALERTS: tuple[tuple[str, str, str, str, str], ...] = (
    (
        "Suspicious file uploaded to a personal cloud storage",
        "microsoftDefenderForEndpoint",
        "microsoftDefenderForEndpoint",
        "Exfiltration",
        "T1567.002",
    ),
    (
        "Sensitive file copied to removable media after unusual activity",
        "microsoftDefenderForEndpoint",
        "microsoftDefenderForEndpoint",
        "Exfiltration",
        "T1052.001",
    ),
    (
        "Suspicious archive created before exfiltration",
        "microsoftDefenderForEndpoint",
        "microsoftDefenderForEndpoint",
        "Collection",
        "T1560.001",
    ),
)
MDO_OUTBOUND_ALERTS: tuple[tuple[str, str, str, str, str], ...] = (
    (
        "Suspicious email sending patterns detected",
        "microsoftDefenderForOffice365",
        "microsoftDefenderForOffice365",
        "Exfiltration",
        "T1048",
    ),
    (
        "Email sending limit exceeded",
        "microsoftDefenderForOffice365",
        "microsoftDefenderForOffice365",
        "Exfiltration",
        "T1048",
    ),
)
MDO_INBOUND_ALERTS: tuple[tuple[str, str, str, str, str], ...] = (
    (
        "Email messages containing malicious URL removed after delivery",
        "microsoftDefenderForOffice365",
        "microsoftDefenderForOffice365",
        "InitialAccess",
        "T1566.002",
    ),
    (
        "A potentially malicious URL click was detected",
        "microsoftDefenderForOffice365",
        "microsoftDefenderForOffice365",
        "InitialAccess",
        "T1566.002",
    ),
)
MDI_ALERTS: tuple[tuple[str, str, str, str, str], ...] = (
    (
        "Suspected identity theft (pass-the-ticket)",
        "microsoftDefenderForIdentity",
        "microsoftDefenderForIdentity",
        "LateralMovement",
        "T1550.003",
    ),
    (
        "User and IP address reconnaissance (SMB)",
        "microsoftDefenderForIdentity",
        "microsoftDefenderForIdentity",
        "Discovery",
        "T1087.002",
    ),
    (
        "Suspected brute-force attack (Kerberos, NTLM)",
        "microsoftDefenderForIdentity",
        "microsoftDefenderForIdentity",
        "CredentialAccess",
        "T1110.003",
    ),
)
CLOUD_APPS_ALERTS: tuple[tuple[str, str, str, str, str], ...] = (
    ("Mass download by a single user", "microsoftDefenderForCloudApps", "cloudAppSecurity", "Exfiltration", "T1530"),
    ("Unusual volume of file deletion", "microsoftDefenderForCloudApps", "cloudAppSecurity", "Impact", "T1485"),
)
CLOUD_ALERTS: tuple[tuple[str, str, str, str, str], ...] = (
    (
        "Unusual amount of data extracted from a storage account",
        "microsoftDefenderForCloud",
        "microsoftDefenderForStorage",
        "Exfiltration",
        "T1537",
    ),
)

# Files and senders of decoy alerts: never a name of FILE_STEMS x FILE_EXTS, never a tenant user.
DECOY_FILES: tuple[str, ...] = (
    "AdobeARMHelper.exe",
    "update_check.ps1",
    "rclone.exe",
    "7za.exe",
    "svchost_.exe",
    "invoice_viewer.js",
)
PHISH_SENDERS: tuple[str, ...] = (
    "billing@contoso-payments.co",
    "it-helpdesk@micros0ft-support.com",
    "docs@sharefile-secure.net",
)
PHISH_SUBJECTS: tuple[str, ...] = (
    "Your mailbox is almost full",
    "Action required: password expires today",
    "Invoice #88213 overdue",
    "Shared document: Q4 bonus plan",
)
PHISH_URLS: tuple[str, ...] = (
    "https://contoso-payments.co/login",
    "https://micros0ft-support.com/reset",
    "https://sharefile-secure.net/d/8f2a1",
)
