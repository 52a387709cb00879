"""The chaos suite: SPEC.md's guarantees under faults, crashes and bad input, end to end.

Scenario modules (`storm`, `crash`, `outage`, `credentials`, `environment`, `limits`, `soak`)
each return a `Report` of figures and failed checks; `lab` runs the real processes (simulator,
a stoppable moto S3 server, the CLI) and `audit` judges the bucket against the simulator.
tests/e2e/test_faults_e2e.py runs light versions in `make test`; `python -m tests.chaos`
(`make chaos`) runs heavy ones and prints one line of figures.
"""
