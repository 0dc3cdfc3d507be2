"""The host's contract kits (forwarder.testing) over our sources and normalizers."""

from __future__ import annotations

import copy

import pytest

from emulators.tenant import EmulatorConfig, TenantEmulator
from forwarder.testing.contracts import NormalizerContractTests, SourceContractTests
from sources.normalize.graph import normalize_alert, normalize_incident
from sources.normalize.management_activity import normalize_audit_record, normalize_graph_audit_record
from tests.sources import records as R
from tests.sources.emulated import serve
from tests.sources.test_tenants_and_check import _source


@pytest.fixture(scope="module")
def tenant(tmp_path_factory):
    emu = TenantEmulator(EmulatorConfig(seed=41, audit_records=60, days=1), state_dir=tmp_path_factory.mktemp("emu"))
    with serve(emu) as server:
        yield emu, server


class TestManagementActivityContract(SourceContractTests):
    @pytest.fixture()
    def source(self, tenant):
        return _source("management_activity", *tenant)


class TestGraphSecurityContract(SourceContractTests):
    @pytest.fixture()
    def source(self, tenant):
        src = _source("graph_security", *tenant)
        src.settings.start_days = 3
        return src


class TestAuditRecordNormalizer(NormalizerContractTests):
    @pytest.fixture()
    def normalizer(self):
        return normalize_audit_record

    @pytest.fixture()
    def records(self):
        return copy.deepcopy(R.ALL_AUDIT)


class TestGraphAuditRecordNormalizer(NormalizerContractTests):
    @pytest.fixture()
    def normalizer(self):
        return normalize_graph_audit_record

    @pytest.fixture()
    def records(self):
        return [copy.deepcopy(R.GRAPH_AUDIT_RECORD)]


class TestAlertNormalizer(NormalizerContractTests):
    @pytest.fixture()
    def normalizer(self):
        return normalize_alert

    @pytest.fixture()
    def records(self):
        return [copy.deepcopy(R.DLP_ALERT), copy.deepcopy(R.NON_DLP_ALERT)]


class TestIncidentNormalizer(NormalizerContractTests):
    @pytest.fixture()
    def normalizer(self):
        return normalize_incident

    @pytest.fixture()
    def records(self):
        return [copy.deepcopy(R.INCIDENT)]
