# The two commands of the README.
.PHONY: dev test bench

dev:  ## set up this machine and run the whole stack in the foreground
	@scripts/bootstrap.sh
	@.venv/bin/infoscreen dev

test:  ## run the whole test suite (SQLite and Postgres, real Mosquitto)
	@scripts/test.sh

bench:  ## run the ingest benchmark (see bench/README.md)
	@scripts/bootstrap.sh --tests
	@.venv/bin/python bench/ingest.py
