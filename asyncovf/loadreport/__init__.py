"""The load-test report: statistics (:mod:`.analysis`) and pictures (:mod:`.charts`)."""
