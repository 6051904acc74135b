"""Entry point: `python -m lab_engine_pytorch` < request.json > report.json."""

from .engine import main

main()
