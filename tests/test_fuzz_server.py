"""schemathesis against the server's own OpenAPI description (``GET /openapi.json``): for every endpoint,
requests generated from the schema (valid ones, and invalid ones: wrong types, missing fields, extra fields)
never get a 5xx, every answer matches the schema (status, content type, body), and a request the schema
rejects is rejected (4xx). The server is a subprocess on the tiny multimodal export (conftest)."""
import pytest
import schemathesis
from fuzz_settings import DEEP, fuzz
from hypothesis import given
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)
from test_serve import Served

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          negative_data_rejection]


@pytest.fixture(scope="module")
def served(serve_mm_export):
    s = Served(serve_mm_export["export"], "--max-wait-ms", 1, "--max-records", 8, "--max-body-bytes", 200_000,
               "--max-image-bytes", 20_000, "--max-text-chars", 200, "--timeout-s", 30)
    yield s
    s.stop()
    assert "Traceback" not in "".join(s.lines), "".join(s.lines)[-3000:]


@pytest.fixture(scope="module")
def api_schema(served):
    """The schema the running server publishes, loaded by schemathesis (its pytest plugin's lazy fixture
    loader does not run under pytest 9: the strategies are drawn here with hypothesis directly)."""
    schema = schemathesis.openapi.from_url(served.url + "/openapi.json")
    schema.config.update(base_url=served.url)
    rejection = schema.config.checks.negative_data_rejection
    rejection.expected_statuses = [*rejection.expected_statuses, "413"]  # over maxItems: 413 is the refusal
    return schema


# (method, path, mode): the GETs take no input, so there is no invalid request of them to make
OPERATIONS = [("GET", "/healthz", GenerationMode.POSITIVE), ("GET", "/readyz", GenerationMode.POSITIVE),
              ("GET", "/v1/model", GenerationMode.POSITIVE), ("GET", "/metrics", GenerationMode.POSITIVE),
              ("GET", "/openapi.json", GenerationMode.POSITIVE), ("POST", "/v1/predict", GenerationMode.POSITIVE),
              ("POST", "/v1/predict", GenerationMode.NEGATIVE)]
IDS = [f"{m} {p} {mode.value}" for m, p, mode in OPERATIONS]


def _fuzz_operation(api_schema, served, method, path, mode, data):
    operation = api_schema[path][method]
    case = data.draw(operation.as_strategy(generation_mode=mode), label="case")
    case.call_and_validate(base_url=served.url, checks=CHECKS)


@pytest.mark.parametrize("method,path,mode", OPERATIONS, ids=IDS)
@fuzz(40)
@given(data=st.data())
def test_server_matches_its_schema(api_schema, served, method, path, mode, data):
    _fuzz_operation(api_schema, served, method, path, mode, data)


@pytest.mark.slow
@pytest.mark.parametrize("method,path,mode", OPERATIONS, ids=IDS)
@DEEP
@given(data=st.data())
def test_server_matches_its_schema_deep(api_schema, served, method, path, mode, data):
    _fuzz_operation(api_schema, served, method, path, mode, data)


def test_the_server_is_healthy_after_the_fuzzing(served, serve_mm_export):
    """Run after the fuzz tests of this module: the server still answers, and its metrics count no 5xx."""
    assert served.client.get("/readyz").status_code == 200
    metrics = served.client.get("/metrics").text
    assert 'serve_requests_total{status="5' not in metrics, metrics
