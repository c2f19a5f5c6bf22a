pytest_plugins = ["e2e.harness.fixtures"]
