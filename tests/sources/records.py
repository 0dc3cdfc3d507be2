"""Hand-built records of every DLP kind, shaped after protocol-facts sections A and C
(including the casing variants, string-or-object ExceptionInfo and string RecordType seen in
the wild)."""

from __future__ import annotations

import copy
from typing import Any

import orjson

TENANT = "8f0c8c3e-1f1e-4a54-9a7e-0d5b6c1a2b3c"
CCN = "50842eb7-edc8-4019-85dd-5a5c1f2bb085"
SSN = "a44669fe-0d48-453d-a9b1-2cc83f2cba77"
LABEL = "f42aa342-8706-4288-bd11-ebb85995028c"


def _rule(rule_id: str, name: str, severity: str, actions: list[str], sit: str, sit_name: str, count: int) -> dict:
    return {
        "RuleId": rule_id,
        "RuleName": name,
        "Actions": actions,
        "Severity": severity,
        "RuleMode": "Enable",
        "ActionParameters": ["GenerateIncidentReport:SiteAdmin"],
        "ConditionsMatched": {
            "ConditionMatchedInNewScheme": True,
            "SensitiveInformation": [
                {
                    "Confidence": 85,
                    "Count": count,
                    "Location": "Message Body",
                    "SensitiveType": sit,
                    "SensitiveInformationTypeName": sit_name,
                    "UniqueCount": count,
                    "ClassifierType": "Content",
                    "SensitiveInformationDetailedClassificationAttributes": [
                        {"Confidence": 75, "Count": count, "IsMatch": True}
                    ],
                    "SensitiveInformationDetections": {
                        "DetectedValues": [{"Name": "Credit Card Number", "Value": "4111 1111 1111 1111"}],
                        "ResultsTruncated": False,
                    },
                }
            ],
            "OtherConditions": [{"Name": "SensitivityLabels", "Value": LABEL}],
        },
    }


EXCHANGE_MATCH: dict[str, Any] = {
    "CreationTime": "2026-11-20T10:11:15",
    "Id": "6e0b7a54-4c5e-4b1a-8d5b-2f0c0c1a0001",
    "Operation": "DlpRuleMatch",
    "OrganizationId": TENANT,
    "RecordType": 13,
    "UserKey": "1153977025279851686",
    "UserType": 4,
    "Version": 1,
    "Workload": "Exchange",
    "ObjectId": "<BN6PR0101MB2884@BN6PR0101MB2884.prod.outlook.com>",
    "UserId": "alice@contoso.com",
    "IncidentId": "2b5f1c3a-0e3f-4a55-8c0a-7c9e2c3a0001",
    "PolicyDetails": [
        {
            "PolicyId": "9d7f0e0a-0c3b-4b48-9b0a-000000000001",
            "PolicyName": "U.S. Financial Data",
            "Rules": [
                _rule("r-1", "Low volume of content detected", "Medium", ["NotifyUser"], CCN, "Credit Card Number", 1)
            ],
        }
    ],
    "SensitiveInfoDetectionIsIncluded": True,
    "ExchangeMetaData": {
        "BCC": [],
        "CC": ["carol@fabrikam.com"],
        "FileSize": 24576,
        "From": "alice@contoso.com",
        "MessageID": "<BN6PR0101MB2884@BN6PR0101MB2884.prod.outlook.com>",
        "RecipientCount": 2,
        "Sent": "2026-11-20T10:11:10",
        "Subject": "Q3 card list",
        "To": ["bob@fabrikam.com"],
        "UniqueID": "0a3f2d1e-aaaa-bbbb-cccc-000000000001",
    },
    "ExceptionInfo": '{ "Justification": "Customer asked for it", "FalsePositive": false, "Rules": ["r-1"] }',
}

SHAREPOINT_MATCH: dict[str, Any] = {
    "CreationTime": "2026-11-20T11:00:00",
    "Id": "6e0b7a54-4c5e-4b1a-8d5b-2f0c0c1a0002",
    "Operation": "DLPRuleMatch",
    "OrganizationId": TENANT,
    "RecordType": "11",
    "UserKey": "DlpPolicyEventBasedAssistantSharePoint",
    "UserType": "4",
    "Workload": "SharePoint",
    "ObjectId": "https://contoso.sharepoint.com/sites/Finance/Shared Documents/payroll.xlsx",
    "UserId": "DlpPolicyEventBasedAssistantSharePoint",
    "PolicyDetails": [
        {
            "PolicyId": "9d7f0e0a-0c3b-4b48-9b0a-000000000002",
            "PolicyName": "U.S. PII",
            "Rules": [
                _rule("r-2", "High volume of PII", "High", ["BlockAccess", "GenerateAlert"], SSN, "U.S. SSN", 12)
            ],
        }
    ],
    "SensitiveInfoDetectionIsIncluded": False,
    "SharePointMetaData": {
        "From": "dave@contoso.com",
        "FileName": "payroll.xlsx",
        "FileOwner": "dave@contoso.com",
        "FilePathUrl": "https://contoso.sharepoint.com/sites/Finance/Shared Documents/payroll.xlsx",
        "FileSize": 88211,
        "itemCreationTime": "2026-11-01T08:00:00",
        "IsViewableByExternalUsers": True,
        "SensitivityLabelIds": [LABEL],
        "SiteCollectionGuid": "5f1b1c2d-0000-0000-0000-000000000001",
        "SiteCollectionUrl": "https://contoso.sharepoint.com/sites/Finance",
        "UniqueID": "c0a80001-0000-0000-0000-000000000002",
    },
}

ONEDRIVE_MATCH: dict[str, Any] = {
    "CreationTime": "2026-11-20T12:00:00.1234567Z",
    "Id": "6e0b7a54-4c5e-4b1a-8d5b-2f0c0c1a0003",
    "Operation": "DlpRuleMatch",
    "OrganizationId": TENANT,
    "RecordType": 11,
    "Workload": "OneDrive",
    "ObjectId": "https://contoso-my.sharepoint.com/personal/erin_contoso_com/Documents/ids.docx",
    "UserId": "DlpPolicyEventBasedAssistantOneDriveForBusiness",
    "PolicyDetails": [
        {
            "PolicyId": "00000000-0000-0000-0000-000000000000",
            "PolicyName": "Label based",
            "Rules": [_rule("r-3", "Labelled content", "Low", [], CCN, "Credit Card Number", 3)],
        }
    ],
    "SharePointMetaData": {
        "from": "erin@contoso.com",
        "fileName": "ids.docx",
        "filePathUrl": "https://contoso-my.sharepoint.com/personal/erin_contoso_com/Documents/ids.docx",
        "siteCollectionUrl": "https://contoso-my.sharepoint.com/personal/erin_contoso_com",
        "UniqueId": "c0a80001-0000-0000-0000-000000000003",
    },
}

TEAMS_MATCH: dict[str, Any] = {
    "CreationTime": "2026-11-20T13:00:00",
    "Id": "6e0b7a54-4c5e-4b1a-8d5b-2f0c0c1a0004",
    "Operation": "DlpRuleMatch",
    "OrganizationId": TENANT,
    "RecordType": 13,
    "Workload": "MicrosoftTeams",
    "UserId": "frank@contoso.com",
    "PolicyDetails": [
        {
            "PolicyId": "9d7f0e0a-0c3b-4b48-9b0a-000000000004",
            "PolicyName": "Teams PII",
            "Rules": [_rule("r-4", "Chat SSN", "Medium", ["BlockAccess"], SSN, "U.S. SSN", 1)],
        }
    ],
    "ExchangeMetaData": {
        "From": "frank@contoso.com",
        "To": ["grace@contoso.com"],
        "MessageID": "1700000000000",
        "Subject": "",
    },
}

ENDPOINT: dict[str, Any] = {
    "CreationTime": "2026-11-20T14:00:00",
    "Id": "6e0b7a54-4c5e-4b1a-8d5b-2f0c0c1a0005",
    "Operation": "FileCopiedToRemovableMedia",
    "OrganizationId": TENANT,
    "RecordType": 63,
    "UserKey": "hank@contoso.com",
    "UserType": 0,
    "Workload": "Endpoint",
    "UserId": "hank@contoso.com",
    "ClientIP": "10.1.2.3",
    "DeviceName": "LAPTOP-7.contoso.com",
    "MDATPDeviceId": "b3f1c2d4e5f60718293a4b5c6d7e8f9012345678",
    "Platform": "Windows",
    "Application": "explorer.exe",
    "ObjectId": "C:\\Users\\hank\\Documents\\customers.csv",
    "FileExtension": "csv",
    "FileSize": 4096,
    "Sha1": "da39a3ee5e6b4b0d3255bfef95601890afd80709",
    "Sha256": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "EnforcementMode": 3,
    "RemovableMediaDeviceAttributes": {"Manufacturer": "SanDisk", "Model": "Ultra", "SerialNumber": "4C530001"},
    "SensitiveInfoTypeData": [
        {"SensitiveInfoTypeId": CCN, "Count": 7, "Confidence": 85, "SensitiveInfoTypeName": "Credit Card Number"}
    ],
    "PolicyMatchInfo": {
        "PolicyId": "9d7f0e0a-0c3b-4b48-9b0a-000000000005",
        "PolicyName": "Endpoint PCI",
        "RuleId": "r-5",
        "RuleName": "Block USB",
    },
    "SensitivityLabelEventData": {"SensitivityLabelId": LABEL},
}

UNDO_OVERRIDE: dict[str, Any] = {
    "CreationTime": "2026-11-20T15:00:00",
    "Id": "6e0b7a54-4c5e-4b1a-8d5b-2f0c0c1a0006",
    "Operation": "DlpRuleUndo",
    "OrganizationId": TENANT,
    "RecordType": 11,
    "Workload": "SharePoint",
    "UserId": "DlpAgent",
    "PolicyDetails": [
        {
            "PolicyId": "9d7f0e0a-0c3b-4b48-9b0a-000000000002",
            "PolicyName": "U.S. PII",
            "Rules": [{"RuleId": "r-2", "RuleName": "High volume of PII", "OverriddenActions": ["BlockAccess"]}],
        }
    ],
    "SharePointMetaData": {
        "From": "dave@contoso.com",
        "FileName": "payroll.xlsx",
        "FilePathUrl": "https://contoso.sharepoint.com/sites/Finance/Shared Documents/payroll.xlsx",
    },
    "ExceptionInfo": {"Reason": "Override", "Justification": "Business need", "Rules": ["r-2"]},
}

FALSE_POSITIVE: dict[str, Any] = {
    "CreationTime": "2026-11-20T16:00:00",
    "Id": "6e0b7a54-4c5e-4b1a-8d5b-2f0c0c1a0007",
    "Operation": "DlpInfo",
    "OrganizationId": TENANT,
    "RecordType": 11,
    "Workload": "OneDrive",
    "UserId": "erin@contoso.com",
    "PolicyDetails": [{"PolicyId": "p", "PolicyName": "Label based", "Rules": [{"RuleId": "r-3"}]}],
    "SharePointMetaData": {"From": "erin@contoso.com", "FileName": "ids.docx"},
    "ExceptionInfo": '{"FalsePositive": true, "Justification": "Test data"}',
}

ALL_AUDIT = [EXCHANGE_MATCH, SHAREPOINT_MATCH, ONEDRIVE_MATCH, TEAMS_MATCH, ENDPOINT, UNDO_OVERRIDE, FALSE_POSITIVE]

DLP_ALERT: dict[str, Any] = {
    "@odata.type": "#microsoft.graph.security.alert",
    "id": "dl8e4b3c2a1f0e9d8c7b6a5f4e3d2c1b0a_1",
    "providerAlertId": "8e4b3c2a-1f0e-9d8c-7b6a-5f4e3d2c1b0a",
    "incidentId": "2972395",
    "status": "InProgress",
    "severity": "High",
    "classification": "unknownFutureValue",
    "determination": "notMalicious",
    "serviceSource": "dataLossPrevention",
    "detectionSource": "microsoftDataLossPrevention",
    "detectorId": "9d7f0e0a-0c3b-4b48-9b0a-000000000002",
    "tenantId": TENANT,
    "title": "DLP policy (U.S. PII) matched for document (payroll.xlsx) in SharePoint",
    "description": "Sensitive info shared externally\n\tsee portal",
    "category": "Exfiltration",
    "assignedTo": "soc@contoso.com",
    "alertWebUrl": f"https://security.microsoft.com/alerts/dl8e4b3c2a1f0e9d8c7b6a5f4e3d2c1b0a_1?tid={TENANT}",
    "incidentWebUrl": f"https://security.microsoft.com/incidents/2972395?tid={TENANT}",
    "createdDateTime": "2026-11-20T11:05:00.1234567Z",
    "lastUpdateDateTime": "2026-11-20T12:30:00.7654321Z",
    "firstActivityDateTime": "2026-11-20T11:00:00Z",
    "mitreTechniques": [],
    "systemTags": [],
    "newFutureProperty": {"x": 1},
    "evidence": [
        {
            "@odata.type": "#microsoft.graph.security.userEvidence",
            "createdDateTime": "2026-11-20T11:05:00Z",
            "roles": ["contextual"],
            "userAccount": {
                "accountName": "admin",
                "domainName": "contoso.com",
                "userPrincipalName": "admin@contoso.com",
            },
        },
        {
            "@odata.type": "#microsoft.graph.security.userEvidence",
            "roles": ["policyViolator"],
            "userAccount": {
                "accountName": "dave",
                "domainName": "contoso.com",
                "userPrincipalName": "dave@contoso.com",
                "azureAdUserId": "7c1d0f7e-0000-0000-0000-00000000000d",
                "displayName": "Dave Example",
            },
        },
        {
            "@odata.type": "#microsoft.graph.security.fileEvidence",
            "roles": [],
            "detectionStatus": "detected",
            "fileDetails": {
                "fileName": "payroll.xlsx",
                "filePath": "https://contoso.sharepoint.com/sites/Finance/Shared Documents/payroll.xlsx",
                "fileSize": 88211,
                "sha1": None,
                "sha256": "abc123",
            },
            "sensitivityLabels": [LABEL],
        },
        {"@odata.type": "#microsoft.graph.security.ipEvidence", "ipAddress": "203.0.113.7"},
        {"@odata.type": "#microsoft.graph.security.kubernetesPodEvidence", "name": "unknown-to-us"},
    ],
}

NON_DLP_ALERT: dict[str, Any] = {
    **copy.deepcopy(DLP_ALERT),
    "id": "da637551227677560813_-961444813",
    "serviceSource": "microsoftDefenderForEndpoint",
    "detectionSource": "antivirus",
    "evidence": [],
}

INCIDENT: dict[str, Any] = {
    "@odata.type": "#microsoft.graph.security.incident",
    "id": "2972395",
    "incidentWebUrl": f"https://security.microsoft.com/incidents/2972395?tid={TENANT}",
    "redirectIncidentId": None,
    "tenantId": TENANT,
    "displayName": "DLP incident involving one user",
    "createdDateTime": "2026-11-20T11:05:00Z",
    "lastUpdateDateTime": "2026-11-20T12:31:00Z",
    "assignedTo": "soc@contoso.com",
    "classification": "TruePositive",
    "determination": "compromisedAccount",
    "status": "Active",
    "severity": "high",
    "tags": ["PII"],
    "comments": [],
    "systemTags": [],
    "description": "",
    "alerts": [copy.deepcopy(DLP_ALERT)],
}

GRAPH_AUDIT_RECORD: dict[str, Any] = {
    "@odata.type": "#microsoft.graph.security.auditLogRecord",
    "id": EXCHANGE_MATCH["Id"],
    "createdDateTime": "2026-11-20T10:11:15Z",
    "auditLogRecordType": "complianceDLPExchange",
    "operation": "DlpRuleMatch",
    "organizationId": TENANT,
    "userType": "regular",
    "userId": "alice@contoso.com",
    "service": "Exchange",
    "objectId": EXCHANGE_MATCH["ObjectId"],
    "userPrincipalName": "alice@contoso.com",
    "clientIp": None,
    "auditData": {"@odata.type": "#microsoft.graph.security.auditData", **copy.deepcopy(EXCHANGE_MATCH)},
}


def blob(records: list[dict[str, Any]]) -> bytes:
    return orjson.dumps(records)
