"""Plain helpers the tests share (constants, writers of test data, local servers): no fixtures, no tests."""
