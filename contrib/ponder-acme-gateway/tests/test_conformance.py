"""The plugin passes ponder's adapter conformance suite, as any third-party adapter should."""

from ponder.testing.conformance import AdapterConformance


class TestAcmeGatewayAdapter(AdapterConformance):
    name = "acme_gateway"
    settings = {"base_url": "http://127.0.0.1:9/v1", "team": "search"}
