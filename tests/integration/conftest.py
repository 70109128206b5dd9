"""The real-component fixtures (Synapse, members, the test dockerd and registry) live in
tests/conftest.py, shared with tests/faults."""
