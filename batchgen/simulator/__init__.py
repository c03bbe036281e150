"""The Scenario-compatible simulator: the API contract on 127.0.0.1, with real audio and faults."""
